"""Built-in datasets: ``folder`` (one sub-folder per identity) and ``synthetic``."""

import convgen


@convgen.hookimpl
def register_datasets(register):
    register("folder", "convgen.data:FolderOfClasses")  # references: imported when first used
    register("synthetic", "convgen.data:SyntheticClusters")
