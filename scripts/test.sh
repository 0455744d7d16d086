#!/usr/bin/env bash
# The test command of pgring: installs the dependencies when missing (a real PostgreSQL
# for the integration tests; see scripts/install-deps.sh), then runs every test of the
# workspace. Extra arguments go to `cargo test`, e.g. `scripts/test.sh --test cluster_smoke`
# or `scripts/test.sh -- --nocapture`.
#
# PGRING_SKIP_INSTALL_DEPS=1 skips the installation step.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ "${PGRING_SKIP_INSTALL_DEPS:-}" != 1 ]]; then
    echo "==> scripts/install-deps.sh"
    scripts/install-deps.sh
fi

echo "==> cargo test --workspace --locked $*"
cargo test --workspace --locked "$@"
