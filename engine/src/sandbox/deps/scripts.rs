//! The shell the fetch containers and the runs execute: each language's fetch, the digest
//! of a cache, and the prelude that checks and wires a cache into a run.

use super::{Plan, Ready};
use crate::sandbox::toolchain::Language;

/// The digest of `/deps`: every file's content and every link's target, in a fixed order.
/// Run at the end of the fetch and again, before the repository's command, in every run.
/// What a run prints, exiting 97, when the cache is not what was fetched. The repository's
/// code could print it too: that only makes its own cache be fetched again.
pub const TAMPERED: &str =
    "selfheal: the dependency cache does not match its digest; refusing to run";
pub const TAMPERED_EXIT: i64 = 97;

/// Absolute paths: a run's `PATH` starts with the cache's own `bin`, whose files are what is
/// being checked.
pub(super) const DIGEST: &str = r#"selfheal_deps_digest() {
  ( cd /deps && { /usr/bin/find . -type f ! -path ./.selfheal-digest -print0 | LC_ALL=C /usr/bin/sort -z | /usr/bin/xargs -0r /usr/bin/sha256sum; \
    /usr/bin/find . -type l -printf '%p -> %l\n' | LC_ALL=C /usr/bin/sort; } | /usr/bin/sha256sum | /usr/bin/cut -d' ' -f1 )
}
"#;

pub(super) const RUST_FETCH: &str = r#"
# A repository's .cargo/config could name programs for cargo to run: not during the fetch.
rm -rf .cargo
export CARGO_HOME=/tmp/cargo-home
if [ ! -f Cargo.lock ]; then
  echo "no Cargo.lock: resolving the newest compatible versions" >&2
  cargo generate-lockfile 2>&1 || exit 1
  cp Cargo.lock /deps/Cargo.lock
fi
cargo vendor --locked --versioned-dirs /deps/vendor >/deps/cargo-config.toml || exit 1
ls /deps/vendor >/deps/resolved.txt
"#;

pub(super) const PYTHON_FETCH: &str = r#"
# Wheels only: an sdist would run its build (the package's own code) here.
# From /tmp and isolated (-I): `python3 -m pip` in the checkout would import a `pip` package
# of the repository's instead of pip (the checkout is not even uploaded for this fetch). No pip
# configuration file is read; the image's CA bundle is the host's.
cd /tmp || exit 1
export PIP_CONFIG_FILE=/dev/null PIP_CERT=/etc/ssl/certs/ca-certificates.crt
python3 -I -m pip install --quiet --disable-pip-version-check --no-input --no-compile \
  --only-binary=:all: --target /deps/python -r /work/selfheal-requirements.txt 2>&1 || {
  echo "selfheal: a requirement has no wheel for this platform, or cannot be fetched" >&2; exit 1; }
python3 -I -m pip list --disable-pip-version-check --path /deps/python --format freeze >/deps/resolved.txt
"#;

pub(super) const NODE_FETCH: &str = r#"
# Lifecycle scripts are the packages' (and the repository's) own code: never run here. The
# repository's .npmrc could point npm at programs too.
rm -f .npmrc
export npm_config_cache=/tmp/npm-cache
# npm prepares git dependencies by running their scripts whatever --ignore-scripts says: with
# no git, there are none to prepare.
export npm_config_git=/bin/false
if [ -f package-lock.json ] || [ -f npm-shrinkwrap.json ]; then
  npm ci --ignore-scripts --no-audit --no-fund 2>&1 || exit 1
else
  if [ -f yarn.lock ] || [ -f pnpm-lock.yaml ]; then
    echo "selfheal: yarn.lock / pnpm-lock.yaml are not read; npm resolves package.json" >&2
  fi
  echo "no package-lock.json: resolving with npm" >&2
  npm install --ignore-scripts --no-audit --no-fund 2>&1 || exit 1
  cp package-lock.json /deps/package-lock.json
fi
cp -a node_modules /deps/node_modules
npm ls --all --parseable 2>/dev/null | sed 's#^/work/repo/##' | grep node_modules >/deps/resolved.txt || true
"#;

pub(super) const GO_FETCH: &str = r#"
export GOMODCACHE=/deps/gomod GOPATH=/tmp/go GOCACHE=/tmp/go-cache GOFLAGS=-mod=mod GOTOOLCHAIN=local
go mod download 2>&1 || exit 1
go list -m all >/deps/resolved.txt 2>/dev/null || true
chmod -R u+w /deps/gomod 2>/dev/null
"#;

/// The shell, run first in every sandbox run with the cache mounted, that refuses a cache
/// whose content is not what was fetched and wires it in for the language's tools.
pub(in crate::sandbox) fn prelude(plan: &Plan, cache: &Ready) -> String {
    let mut out = String::from(DIGEST);
    out.push_str(&format!(
        "[ \"$(selfheal_deps_digest)\" = {} ] || {{ echo '{TAMPERED}' >&2; exit 97; }}\n",
        cache.digest
    ));
    match plan.language {
        Language::Rust => out.push_str(
            "mkdir -p \"$CARGO_HOME\" && cp /deps/cargo-config.toml \"$CARGO_HOME/config.toml\"\n\
             [ -f Cargo.lock ] || [ ! -f /deps/Cargo.lock ] || cp /deps/Cargo.lock Cargo.lock\n",
        ),
        Language::Node => out.push_str(
            "[ -e node_modules ] || ln -s /deps/node_modules node_modules\n\
             [ -f package-lock.json ] || [ ! -f /deps/package-lock.json ] || cp /deps/package-lock.json .\n",
        ),
        Language::Python | Language::Go | Language::Java => {}
    }
    out
}

/// Environment a run gets with the cache mounted (on top of [`Language::env`]).
pub(in crate::sandbox) fn env(plan: &Plan) -> Vec<String> {
    match plan.language {
        Language::Python => vec![
            "PYTHONPATH=/deps/python".into(),
            "PATH=/deps/python/bin:/usr/local/bin:/usr/bin:/bin".into(),
        ],
        Language::Go => vec!["GOMODCACHE=/deps/gomod".into()],
        Language::Rust | Language::Node | Language::Java => vec![],
    }
}
