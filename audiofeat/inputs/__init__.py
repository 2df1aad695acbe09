"""The inputs: finding and hashing them (:mod:`.inventory`), reading media into samples (:mod:`.media`) and the
decoded WAVs (:mod:`.wav`). Nothing is re-exported here: the inventory job must not import the decoders."""
