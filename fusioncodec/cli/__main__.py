"""``python -m fusioncodec.cli``: the ``fcodec`` command."""

from fusioncodec.cli import main

main()
