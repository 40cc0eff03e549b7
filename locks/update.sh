#!/bin/sh
# Regenerate the hash-pinned lock files the images install from (`make locks`).
#
# One lock per image, resolved for the images' platform (CPython 3.11 on Linux x86_64,
# glibc 2.36 as in Debian bookworm) from PyPI, wheels only, every file with its sha256:
#   operator.txt   Dockerfile.operator           pyproject extra `operator`
#   inference.txt  Dockerfile.inference `base`   extra `inference`
#   tuning.txt     Dockerfile.inference `tuning` extras `inference,tuning,qlora`
# inference.txt is constrained by tuning.txt, so the tuning image (base + tuning.txt) keeps
# every version the base image has. Needs uv (pip install uv==0.13.8) and access to PyPI.
set -eu
cd "$(dirname "$0")/.."
UV=${UV:-uv}
compile() {
    out=$1
    shift
    "$UV" pip compile pyproject.toml locks/build.in "$@" \
        --generate-hashes --only-binary :all: \
        --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
        --index-url https://pypi.org/simple \
        --custom-compile-command "sh locks/update.sh" \
        --quiet --output-file "locks/$out"
}
compile operator.txt --extra operator
compile tuning.txt --extra inference --extra tuning --extra qlora
compile inference.txt --extra inference --constraint locks/tuning.txt
