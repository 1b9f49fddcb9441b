#!/usr/bin/env bash
# Build the HAPI FHIR sandbox server (deploy/hapi) used by the integration tests.
#
# Uses Maven's default local repository (~/.m2), so a second run on the same machine
# reuses the ~300 MB of downloaded jars and takes seconds. Needs Java 17+ and Maven.
# Exits non-zero, with Maven's output, if the build fails.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
project="$repo_root/deploy/hapi"

for tool in java mvn; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "hapi-build: '$tool' is not on PATH" >&2
        exit 1
    fi
done

start=$(date +%s)
(cd "$project" && mvn -q -B -DskipTests package)
jar="$project/target/til-hapi-sandbox.jar"
if [[ ! -f "$jar" ]]; then
    echo "hapi-build: Maven succeeded but $jar is missing" >&2
    exit 1
fi
echo "hapi-build: built $jar in $(( $(date +%s) - start ))s"
