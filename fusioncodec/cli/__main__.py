"""``python -m fusioncodec.cli``: the ``fcodec`` command."""

from fusioncodec.cli import main

if __name__ == "__main__":  # not when a child process imports it
    main()
