"""The checkpoint stage: read a TF-Slim checkpoint and check it against a net.

Public entry point: :class:`Checkpoint`. It reads TF V1 checkpoints (one file,
as in TF-Slim's tarballs) and V2 checkpoints (``.index`` + ``.data``) through
``tf.train.load_checkpoint``. Restoring is strict: every variable a net asks
for must be present with the same shape and dtype, otherwise one
:class:`~hubexport.errors.CheckpointError` lists every problem. Extra
checkpoint variables (``global_step``, optimizer slots, ``AuxLogits``) are
ignored.
"""

import numpy as np

from hubexport.errors import CheckpointError

_MAX_LISTED = 8


class Checkpoint:
    """A checkpoint file opened for reading.

    Args:
      path: the checkpoint path (the V1 file itself, or a V2 prefix).

    Raises:
      CheckpointError: the file is missing, truncated or not a checkpoint.
    """

    def __init__(self, path):
        import tensorflow as tf

        self.path = str(path)
        try:
            self._reader = tf.train.load_checkpoint(self.path)
            self.shapes = {k: tuple(v) for k, v in self._reader.get_variable_to_shape_map().items()}
            self.dtypes = {k: v.name for k, v in self._reader.get_variable_to_dtype_map().items()}
        except (tf.errors.OpError, ValueError) as e:
            raise CheckpointError("%s: not a readable TensorFlow checkpoint (%s); delete it "
                                  "from the cache and fetch again"
                                  % (self.path, _first_line(e))) from None

    def check(self, requests):
        """Checks that the checkpoint holds every requested variable.

        Args:
          requests: iterable of :class:`hubexport.nets.layers.VariableRequest`
            (name, shape); all variables are float32.

        Raises:
          CheckpointError: one message listing the missing variables and
            those with another shape or dtype.
        """
        problems = []
        for req in requests:
            if req.name not in self.shapes:
                problems.append("%s missing" % req.name)
            elif self.shapes[req.name] != tuple(req.shape):
                problems.append("%s has shape %s, the net needs %s"
                                % (req.name, list(self.shapes[req.name]), list(req.shape)))
            elif self.dtypes[req.name] != "float32":
                problems.append("%s has dtype %s, the net needs float32"
                                % (req.name, self.dtypes[req.name]))
        if problems:
            shown = "; ".join(problems[:_MAX_LISTED])
            more = " (and %d more)" % (len(problems) - _MAX_LISTED) if len(problems) > _MAX_LISTED else ""
            raise CheckpointError("%s does not fit the net: %s%s; is the spec's architecture right?"
                                  % (self.path, shown, more))

    def values(self, names):
        """Reads variables.

        Args:
          names: iterable of variable names.
        Returns:
          dict name -> numpy array (float32 for the nets' variables).
        Raises:
          CheckpointError: a name is missing or its bytes cannot be read.
        """
        import tensorflow as tf

        out = {}
        for name in names:
            try:
                out[name] = np.asarray(self._reader.get_tensor(name))
            except (tf.errors.OpError, ValueError) as e:
                # A name the checkpoint lists but cannot read means damaged
                # bytes (TF reports a failed block checksum as "not found").
                damaged = ("; the file is damaged: delete it from the cache and fetch again"
                           if name in self.shapes else "")
                raise CheckpointError("%s: cannot read variable %s (%s)%s"
                                      % (self.path, name, _first_line(e), damaged)) from None
        return out


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
