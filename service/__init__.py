"""til-cds: a CDS Hooks 2.0 service that suggests TIL therapy trials, with the evidence."""

__version__ = "0.1.0"
__all__ = ["__version__"]
