"""What a run says about itself: the HTML report (:mod:`.html`), its advice (:mod:`.advice`) and
``audiofeat status`` (:mod:`.status`)."""
