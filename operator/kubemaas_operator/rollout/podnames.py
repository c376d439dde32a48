"""The names Kubernetes gives a Deployment's pods, as PromQL regular expressions (pure).

A Deployment's ReplicaSet is named ``<deployment>-<pod-template-hash>`` and asks for pods with
``generateName: <replicaset>-``; the API server's name generator
(k8s.io/apiserver/pkg/storage/names, ``SimpleNameGenerator``) cuts that base to 58 characters
(63 minus the 5 random characters it appends) and adds 5 random alphanumerics. A pod of a
Deployment with a long name is therefore ``(<deployment>-<hash>-)[:58]`` + 5 characters: the
hash, even the dash before it, may be cut. A selector assuming ``<deployment>-<hash>-<suffix>``
matches none of them. Prometheus' scrape configs (kube-prometheus, the Prometheus Operator's
PodMonitor) carry ``namespace`` and ``pod`` by default but not the pod's labels, so the pod name
is what a query can select on.

Prometheus anchors regular expressions at both ends (RE2); these are written for that. Pod names
are DNS subdomains (lower-case alphanumerics, ``-`` and ``.``); a ``.`` is matched literally.
Where the cut leaves too little of the hash to tell templates (or stable from canary) apart,
the callers name the pods they see one by one instead (``names_pattern``).
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_NAME_LENGTH = 63
RANDOM_LENGTH = 5
MAX_GENERATED_BASE = MAX_NAME_LENGTH - RANDOM_LENGTH
"""58: the longest ``generateName`` base the API server keeps (it cuts longer ones)."""
MAX_HASH_LENGTH = 10
"""A pod-template-hash is a uint32 in Kubernetes' safe encoding: at most 10 characters."""
ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
"""The characters of pod-template-hash values and of the random suffix (k8s.io/apimachinery's
``util/rand``: no vowels, no look-alikes). Patterns use them, not ``[a-z0-9]``, so the stable
pattern ``<deployment>-<hash>...`` can never match a canary pod ``<deployment>-canary-...``."""
_CHAR = f"[{ALPHANUMS}]"


def _literal(text: str) -> str:
    """``text`` as a regular expression matching itself (names hold only ``[a-z0-9.-]``; a dot is
    the one character that needs it, and ``[.]`` avoids a backslash PromQL strings would need doubled)."""
    return text.replace(".", "[.]")


def generated_base(base: str) -> str:
    """The part of ``generateName: base`` the API server keeps: the first 58 characters."""
    return base[:MAX_GENERATED_BASE]


def pod_name(replicaset: str, suffix: str) -> str:
    """The name the API server gives a pod of ``replicaset`` with random ``suffix`` (5 characters).

    ``pod_name("m-7d4f9c6b8", "x2k9p")`` -> ``"m-7d4f9c6b8-x2k9p"``; a long ReplicaSet name is cut
    to 58 characters first, dash included. Raises ValueError when ``suffix`` is not 5 characters.
    """
    if len(suffix) != RANDOM_LENGTH:
        raise ValueError(f"suffix: expected {RANDOM_LENGTH} characters, got {suffix!r}")
    return generated_base(f"{replicaset}-") + suffix


def hash_survives(deployment: str, template_hash: str) -> bool:
    """Whether pods of ``deployment`` with ``template_hash`` carry the whole hash (and the dash after
    it) in their names; when the base is cut into the hash, names cannot tell templates apart."""
    return len(f"{deployment}-{template_hash}-") <= MAX_GENERATED_BASE


def names_distinguish(deployment: str) -> bool:
    """Whether the names of ``deployment``'s pods (``<deployment>-<hash>...``) can be told from
    those of its canary (``<deployment>-canary-...``): the cut base must keep at least two hash
    characters, the second of which (from ``ALPHANUMS``) is never the ``a`` of ``canary``. True
    up to 55 characters."""
    return MAX_GENERATED_BASE - len(f"{deployment}-") >= 2


def names_pattern(names: Iterable[str]) -> str:
    """A regular expression matching exactly ``names`` (pod names); raises ValueError when empty."""
    unique = sorted(set(names))
    if not unique:
        raise ValueError("names: expected at least one pod name, got none")
    return unique[0].replace(".", "[.]") if len(unique) == 1 else f"({'|'.join(_literal(n) for n in unique)})"


def pod_name_pattern(deployment: str, hashes: Iterable[str] | None = None) -> str:
    """A regular expression (anchored, as PromQL's ``=~`` is) matching exactly the names of the pods
    of ``deployment``'s ReplicaSets with a pod-template-hash in ``hashes`` (None or empty: any).

    Known hashes give their exact prefixes, ``(<deployment>-<hash>-)[:58]``; otherwise the hash
    part is 1-10 alphanumerics followed by ``-``, or, where the base was cut, exactly the
    characters left before the cut.
    """
    suffix = f"{_CHAR}{{{RANDOM_LENGTH}}}"
    known = sorted(set(hashes or ()))
    if known:
        prefixes = sorted({_literal(generated_base(f"{deployment}-{h}-")) for h in known})
        head = prefixes[0] if len(prefixes) == 1 else f"({'|'.join(prefixes)})"
        return head + suffix
    base = f"{deployment}-"
    if len(base) >= MAX_GENERATED_BASE:
        return _literal(generated_base(base)) + suffix
    room = MAX_GENERATED_BASE - len(base)
    forms = []
    if room >= 2:  # the whole hash and its dash fit
        forms.append(f"{_CHAR}{{1,{min(room - 1, MAX_HASH_LENGTH)}}}-")
    if room <= MAX_HASH_LENGTH:  # a hash this long is cut at the 58th character
        forms.append(f"{_CHAR}{{{room}}}")
    hash_part = forms[0] if len(forms) == 1 else f"({'|'.join(forms)})"
    return _literal(base) + hash_part + suffix
