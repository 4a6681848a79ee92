"""The comparison a reviewer asks for: pretraining variants run end to end (:mod:`.pretrain`), linear probes of
their encoders (:mod:`.probes`) and the evaluation table over seeds (:mod:`.evaluate`)."""
