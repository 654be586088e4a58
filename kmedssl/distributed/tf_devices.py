"""TensorFlow's host CPU as N logical devices, for ``MirroredStrategy`` on a machine without GPU.

The split must happen before TensorFlow's runtime starts (its first op, or listing logical devices);
``kmedssl.distributed.strategy.data_parallel`` calls it first thing, so ``pretrain(devices=N)`` works as long
as nothing ran a TensorFlow op before it. The module imports no Keras, so it can also run before Keras.
"""


def split_host_cpu(devices):
    """Split the host CPU into ``devices`` logical devices when there is no GPU (GPUs are used as they are).

    Raises:
        ValueError: TensorFlow's runtime already started with fewer logical CPU devices.
    """
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    physical = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(physical) or [None]
    if len(current) >= devices:
        return
    try:
        tf.config.set_logical_device_configuration(physical, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError as error:
        raise ValueError(
            f"Expected to split the CPU into {devices} logical devices, but TensorFlow's runtime had already "
            f"started with {len(current)}: call kmedssl.distributed.tf_devices.split_host_cpu({devices}) before "
            f"importing Keras. ({error})"
        ) from error
