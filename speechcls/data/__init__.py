"""Speech Commands trees: the index and its splits, download, the espeak-ng demo tree."""
