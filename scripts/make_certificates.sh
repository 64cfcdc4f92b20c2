#!/usr/bin/env bash
# A private CA, a learner certificate and an actor certificate for the actor-learner channel (mutual TLS),
# with OpenSSL 3:   bash scripts/make_certificates.sh <out dir> <learner IP or DNS name> [more actor names]
# Copy ca.pem + learner.{pem,key} to the learner machine, ca.pem + actor.{pem,key} to every actor machine;
# ca.key stays offline. Then start the learner and actors with the flags this script prints.
set -euo pipefail
out="${1:?usage: make_certificates.sh <out dir> <learner IP or DNS name>}"
host="${2:?usage: make_certificates.sh <out dir> <learner IP or DNS name>}"
mkdir -p "$out"; cd "$out"
if [[ "$host" =~ ^[0-9.]+$ || "$host" == *:* ]]; then san="IP:$host"; else san="DNS:$host"; fi
[[ "$host" != "127.0.0.1" ]] && san="$san,IP:127.0.0.1"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -days 365 -subj /CN=lerobot-pirl-ca -keyout ca.key -out ca.pem 2>/dev/null
for who in learner actor; do
  openssl req "${ec[@]}" -subj "/CN=$who" -addext "subjectAltName=$san" -keyout "$who.key" -out "$who.csr" 2>/dev/null
  openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -days 365 -copy_extensions copy -out "$who.pem" 2>/dev/null
  rm "$who.csr"
done
chmod 600 ./*.key
d="$(pwd)"
cat <<MSG
wrote $d/{ca,learner,actor}.{pem,key}
learner: --policy.actor_learner_config.learner_host=0.0.0.0 --policy.transport.server_cert=$d/learner.pem --policy.transport.server_key=$d/learner.key --policy.transport.ca_cert=$d/ca.pem
actor:   --policy.actor_learner_config.learner_host=$host --policy.transport.ca_cert=$d/ca.pem --policy.transport.client_cert=$d/actor.pem --policy.transport.client_key=$d/actor.key
token:   export PIRL_ACTOR_TOKEN=<the same secret on every machine, e.g. from: openssl rand -hex 32>
MSG
