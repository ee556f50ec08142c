#!/usr/bin/env bash
# Applies a unified diff (patch -p1) to a source tree, all or nothing: a dry run first, and when a
# hunk does not apply, names the file, the hunk and its line and changes nothing.
# Usage: scripts/apply_patch.sh SOURCE_DIR PATCH_FILE. Used by setup.sh for third_party/horovod.
set -euo pipefail

die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: apply_patch.sh SOURCE_DIR PATCH_FILE"
src="$1"
patch_file="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
[ -d "$src" ] || die "apply_patch.sh: SOURCE_DIR '$src' is not a folder"
[ -f "$patch_file" ] || die "apply_patch.sh: PATCH_FILE '$2' does not exist"
command -v patch >/dev/null || die "apply_patch.sh needs 'patch' (apt-get install patch)"

# --forward: a hunk that looks applied already counts as a failure, not as a silent reversal.
if ! out="$(cd "$src" && patch -p1 --forward --batch --dry-run <"$patch_file" 2>&1)"; then
  # patch prints "checking file F" before each file's hunks, then "Hunk #N FAILED at L." for each
  # hunk that does not apply; turn that into one line per failed hunk.
  failed="$(awk '
    /^checking file / { file = substr($0, 15) }
    /^Hunk #[0-9]+ FAILED at [0-9]+/ {
      n = $2; sub(/^#/, "", n); line = $5; sub(/[^0-9].*$/, "", line)
      printf "  %s: hunk %s (at line %s of the original) does not apply\n", file, n, line
    }
    /^can.t find file to patch/ { print "  " $0 }
    /Reversed \(or previously applied\) patch detected/ { printf "  %s: already patched\n", file }
  ' <<<"$out")"
  printf '%s\n' "$out" | sed 's/^/  patch: /' >&2
  die "the patch $patch_file does not apply to $src; nothing was changed.
${failed:-  (patch gave no hunk; see its output above)}
Update the patch for this source (see third_party/horovod/README.md)."
fi
(cd "$src" && patch -p1 --forward --batch --silent <"$patch_file")
