"""pedsearch shared package: configuration, the Milvus schema, the model bundle format, the
attribute schema, the synthetic pedestrian world and the command line.

It imports none of the parts that use it (``workers``, ``gateway``, ``training``, ``deploy``).
"""

__version__ = "0.1.0"
