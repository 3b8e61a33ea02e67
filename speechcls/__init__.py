"""speechcls: spoken-word classifiers on Google's Speech Commands, with an offline feature cache."""

__version__ = "0.1.0"
