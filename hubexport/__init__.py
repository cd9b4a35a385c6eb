"""hubexport: turn TF-Slim's pre-trained checkpoints into TensorFlow Hub modules.

The pipeline, one module per stage:

    specs -> fetch -> checkpoint -> nets -> formats -> cards -> publish

Importing this package does not import TensorFlow; only the stages that need
it (checkpoint, nets, formats) import it, lazily.
"""

__version__ = "0.1.0"
