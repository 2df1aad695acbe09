# audiofeat: media folder -> 48 kHz mono WAV -> log-mel/MFCC statistics + CLAP embeddings -> manifests.
# The Snakefile only orchestrates: rules live in workflow/rules/, logic in the audiofeat package.
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/inventory.smk"
include: "workflow/rules/decode.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/finalize.smk"


rule all:
    input:
        get_final_outputs(),
    default_target: True
