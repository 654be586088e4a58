"""Methods: one ``keras.Model`` per pretraining method (SPEC §1 methods/), each in the module of its name stem
(``kmedssl.methods.spcl.SPCL``, ...); ``base`` holds the shared base class."""
