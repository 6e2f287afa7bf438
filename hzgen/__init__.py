"""hzgen: an allocator compiler. A YAML spec in, a specialized C malloc out."""
__version__ = "0.1.0"
