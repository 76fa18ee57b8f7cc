"""More than one device: data-parallel training on the backend's own engine (``--devices``).

smallvision does not distribute anything itself. It asks the backend's engine:

* JAX: ``keras.distribution.DataParallel`` — a one-axis ``DeviceMesh`` over the devices, every
  variable replicated, every batch split along its first axis, gradients reduced by XLA.
  Several processes (several machines, or several on one) through
  ``keras.distribution.initialize``, configured by Keras' own variables
  ``KERAS_DISTRIBUTION_JOB_ADDRESSES`` (the coordinator's HOST:PORT first),
  ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and ``KERAS_DISTRIBUTION_PROCESS_ID``.
* TensorFlow: ``tf.distribute.MirroredStrategy`` (one process; Keras' own TensorFlow
  distribution backend is a prototype, so it is not used).
* PyTorch: none yet (Keras has not released one): a one-line error.

The rest of smallvision sees a :class:`Devices` value: how many devices, which engine, and
this process's place among the processes. The run loop creates and trains its models inside
:meth:`Devices.scope`; evaluation, prediction and the frozen passes stay outside it, on one
device. :class:`~smallvision.data.dataset.ImageBatches` makes every batch a multiple of the
device count (both engines refuse a batch they cannot split evenly — a dataset's last batch,
usually): it pads the batch with copies of its own images weighted 0 and scales the real images'
weights by padded/real, so the loss and its gradient are the mean over the real images, as on
one device. With several processes each one feeds its own contiguous slice of every global
batch, from the same cache.

``SMALLVISION_CPU_DEVICES=N`` splits the CPU into N devices (JAX's ``jax_num_cpu_devices``,
TensorFlow's logical devices), to try the multi-device path on a machine without accelerators
— tests and ``bench/devices.py`` use it. It is not faster: the devices share the same cores.
"""
import contextlib
import dataclasses
import os

from .errors import SmallvisionError

CPU_DEVICES_ENV = "SMALLVISION_CPU_DEVICES"
PROCESSES_ENV = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ENGINES = {"jax": "keras.distribution.DataParallel", "tensorflow": "tf.distribute.MirroredStrategy"}


@dataclasses.dataclass(frozen=True)
class Devices:
    """Where a run trains: ``count`` devices (over all processes) with ``engine``; this is
    process ``process`` of ``processes``. One device is the plain path (no engine)."""

    count: int = 1
    engine: str | None = None
    names: tuple = ()
    processes: int = 1
    process: int = 0

    @property
    def writer(self):
        """Whether this process writes the run folder (the first one; the others train the same
        model in a private copy that is removed at the end)."""
        return self.process == 0

    def scope(self):
        """The context in which a model is created and trained on these devices."""
        if self.count == 1:
            return contextlib.nullcontext()
        return _engine(self).scope()

    def padded(self, n):
        """``n`` rows rounded up to a multiple of the device count (how a batch is padded)."""
        return -(-n // self.count) * self.count

    def folder(self, path):
        """Where this process writes what it would write at ``path``: ``path`` itself in the
        first process; in the others a private copy of it (or, when it does not exist yet, a
        fresh path in a private folder), so that the first process alone writes the real one."""
        if self.writer or is_private(path):
            return path
        return private_folder(path)

    def prepare(self, model):
        """Adapt a compiled ``model`` to the engine before it trains: MirroredStrategy runs one
        batch per call (Keras' several-steps-per-call loop fails under it: "You must feed a
        value for placeholder tensor")."""
        if self.engine == ENGINES["tensorflow"] and getattr(model, "steps_per_execution", 1) > 1:
            model.steps_per_execution = 1
        return model

    def to_json(self):
        """What config.json records (the names, without this process's place)."""
        return {"count": self.count, "engine": self.engine, "names": list(self.names), "processes": self.processes}

    def describe(self):
        where = f" in {self.processes} processes" if self.processes > 1 else ""
        return f"{self.count} devices ({', '.join(self.names)}){where} with {self.engine}"


ONE = Devices()


def parse(spec):
    """``--devices``: None, a positive int (or its text) or "all" -> None, int or "all"; else a
    one-line error."""
    if spec is None:
        return None
    text = str(spec).strip().lower()
    if text == "all":
        return "all"
    if isinstance(spec, bool) or not text.isdigit() or int(text) < 1:
        raise SmallvisionError(f"devices must be a positive integer or 'all'. Received: devices={spec!r}")
    return int(text)


def resolve(spec, recorded=None):
    """The :class:`Devices` for ``spec`` (``--devices``: None, N or "all") on this backend.

    ``recorded``: a run's config.json ``devices`` (a resume keeps its devices unless ``spec``
    says otherwise). None and 1 are one device, unless several processes were started.
    """
    import keras

    want = parse(spec)
    if want is None:
        want = int((recorded or {}).get("count", 1))
    backend = keras.backend.backend()
    processes = _processes()
    if want == 1 and processes == 1:
        return ONE
    if backend not in ENGINES:
        raise SmallvisionError(f"devices={spec if spec is not None else want!r}: data-parallel training runs on the "
                               f"JAX backend ({ENGINES['jax']}) and the TensorFlow backend "
                               f"({ENGINES['tensorflow']}); this is KERAS_BACKEND={backend}: set KERAS_BACKEND=jax "
                               "or tensorflow, or train on one device")
    if processes > 1 and backend != "jax":
        raise SmallvisionError(f"{PROCESSES_ENV}={processes}: training over several processes runs on the JAX "
                               f"backend (keras.distribution.initialize); this is KERAS_BACKEND={backend}")
    names = _list_devices(backend)
    if want == "all":
        want = len(names)
    if processes > 1 and want != len(names):
        raise SmallvisionError(f"devices={want}: {processes} processes train on all their devices together "
                               f"({len(names)}: {', '.join(names)}); use --devices all")
    if want > len(names):
        hint = f"; for CPU devices to try this on, set {CPU_DEVICES_ENV}={want}" if _is_cpu(names) else ""
        raise SmallvisionError(f"devices={want}: the {backend} backend sees {len(names)} device"
                               f"{'s' if len(names) != 1 else ''} here ({', '.join(names)}){hint}")
    if want == 1:
        return ONE
    process = 0
    if processes > 1:
        import jax
        process = jax.process_index()
    return Devices(count=want, engine=ENGINES[backend], names=tuple(names[:want]), processes=processes,
                   process=process)


def first_process():
    """False only in a process other than the first of a multi-process training (which
    neither writes nor reports)."""
    if not _STATE.get("initialized"):
        return True
    import jax
    return jax.process_index() == 0


def _is_cpu(names):
    return all("cpu" in n.lower() for n in names)


def _processes():
    """How many processes train together: 1, or Keras' ``KERAS_DISTRIBUTION_NUM_PROCESSES``
    (then the JAX coordination service is started here, once)."""
    text = os.environ.get(PROCESSES_ENV, "").strip()
    if not text:
        return 1
    if not text.isdigit() or int(text) < 1:
        raise SmallvisionError(f"{PROCESSES_ENV} must be a positive integer. Received: {text!r}")
    n = int(text)
    if n > 1 and not _STATE.get("initialized"):
        import keras
        if keras.backend.backend() == "jax":
            for key in ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_PROCESS_ID"):
                if not os.environ.get(key):
                    raise SmallvisionError(f"{PROCESSES_ENV}={n} needs {key} too (see README: More than one device)")
            _virtual_cpus("jax")
            try:
                keras.distribution.initialize()  # reads the three variables; waits for every process
            except Exception as e:  # a refused or unreachable coordinator
                raise SmallvisionError(f"cannot join the other processes at "
                                       f"{os.environ['KERAS_DISTRIBUTION_JOB_ADDRESSES']}: "
                                       f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") \
                    from None
            _STATE["initialized"] = True
    return n


_STATE = {}


def _virtual_cpus(backend):
    """Apply ``SMALLVISION_CPU_DEVICES`` (once, before the backend starts its devices)."""
    text = os.environ.get(CPU_DEVICES_ENV, "").strip()
    if not text or _STATE.get("cpus"):
        return
    if not text.isdigit() or int(text) < 1:
        raise SmallvisionError(f"{CPU_DEVICES_ENV} must be a positive integer. Received: {text!r}")
    n = int(text)
    try:
        if backend == "jax":
            import jax
            jax.config.update("jax_num_cpu_devices", n)
        elif backend == "tensorflow":
            import tensorflow as tf
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        raise SmallvisionError(f"{CPU_DEVICES_ENV}={n}: the {backend} backend had already started its devices in "
                               "this process; set the variable before smallvision starts") from None
    _STATE["cpus"] = n


def _list_devices(backend):
    """The devices an engine would use: the accelerators if there are any, else the CPU('s)."""
    _virtual_cpus(backend)
    if backend == "jax":
        import keras
        return list(keras.distribution.list_devices())
    import tensorflow as tf
    for kind in ("GPU", "TPU", "CPU"):
        found = [d.name for d in tf.config.list_logical_devices(kind)]
        if found:
            return found
    return []


def private_folder(source=None):
    """A path in a new folder private to this process, removed when the process ends: a copy of
    the folder ``source`` when it exists, else a path not created yet (named like ``source``).
    Where a process other than the first trains the same model while the first writes the real
    run or ladder folder (:meth:`Devices.folder`)."""
    import atexit
    import shutil
    import tempfile
    root = _STATE.get("private")
    if root is None:
        root = _STATE["private"] = tempfile.mkdtemp(prefix=f"smallvision-process{os.getpid()}-")
        atexit.register(shutil.rmtree, root, True)
    target = os.path.join(tempfile.mkdtemp(dir=root), os.path.basename(os.path.normpath(source or "run")))
    if source and os.path.isdir(source):
        shutil.copytree(source, target)
    return target


def is_private(path):
    """Whether ``path`` lies in a folder made by :func:`private_folder`."""
    root = _STATE.get("private")
    return bool(root and path and os.path.abspath(path).startswith(root + os.sep))


_ENGINES = {}


def _engine(devices):
    """The engine object for ``devices``, made once per process (a MirroredStrategy is costly)."""
    key = devices.names
    if key not in _ENGINES:
        if devices.engine == ENGINES["jax"]:
            import keras
            # auto_shard_dataset=False: each process already feeds its own slice (ImageBatches)
            _ENGINES[key] = keras.distribution.DataParallel(devices=list(devices.names), auto_shard_dataset=False)
        else:
            import tensorflow as tf
            _ENGINES[key] = tf.distribute.MirroredStrategy(list(devices.names))
    return _ENGINES[key]
