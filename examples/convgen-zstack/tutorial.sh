#!/usr/bin/env bash
# The commands of the plugin tutorial (docs/writing-plugins.md includes them from here), run
# by `make check-plugin-path` so that they keep working. It needs convgen and this plugin
# installed (pip install -e 'examples/convgen-zstack[test]') and works in a temporary folder.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# --8<-- [start:new]
convgen plugins new zstack
# --8<-- [end:new]
test -f convgen-zstack/src/convgen_zstack/plugin.py

# --8<-- [start:check]
CONVGEN_LOAD_PLUGINS=zstack convgen plugins                            # the core, and this plugin only
# --8<-- [end:check]

# --8<-- [start:run]
convgen run zstack-stylize iterations=20 -o runs/demo                 # a generated 3D pair
convgen run zstack-stylize style=runs/demo/stylized.ome.tif init=noise \
    style_size=[16,32,32] iterations=20 -o runs/texture                # a texture, from a stack
# --8<-- [end:run]

# --8<-- [start:describe]
mkdir -p stacks/demo stacks/texture                                    # one sub-folder per identity
cp runs/demo/stylized.ome.tif stacks/demo/
cp runs/texture/stylized.ome.tif stacks/texture/
convgen run zstack-describe dataset.root=stacks -o runs/describe
# --8<-- [end:describe]
test -f runs/describe/summary.json
echo "tutorial commands: all ran"
