"""Entropy coding with constriction: integer CDF tables and the range coder around them."""

from fusioncodec.coding.tables import CategoricalTables, RangeDecoder, RangeEncoder

__all__ = ["CategoricalTables", "RangeDecoder", "RangeEncoder"]
