"""Built-in datasets: ``folder`` (one sub-folder per identity) and ``synthetic``."""

import convgen


@convgen.hookimpl
def register_datasets(register):
    from convgen.data import FolderOfClasses, SyntheticClusters

    register("folder", FolderOfClasses)
    register("synthetic", SyntheticClusters)
