"""One call per Rego built-in with the result OPA gives for it: what `SUPPORTED_BUILTINS`
(policy/builtins.py) is checked against. `python -m tests.policy.builtin_probes` prints which
built-ins regopy implements correctly; tests/policy/test_builtins.py re-probes every listed
one, so a regopy upgrade that changes one fails there."""

from __future__ import annotations

from typing import Any

# name: (expression, the value OPA gives). Strings are Rego source.
PROBES: dict[str, tuple[str, Any]] = {
    # operators, also callable by name
    "equal": ("equal(1, 1)", True),
    "neq": ("neq(1, 2)", True),
    "lt": ("lt(1, 2)", True),
    "lte": ("lte(2, 2)", True),
    "gt": ("gt(3, 2)", True),
    "gte": ("gte(2, 2)", True),
    "plus": ("plus(1, 2)", 3),
    "minus": ("minus(5, 2)", 3),
    "mul": ("mul(2, 3)", 6),
    "div": ("div(7, 2)", 3.5),
    "rem": ("rem(7, 3)", 1),
    "and": ("and({1, 2}, {2, 3})", [2]),
    "or": ("or({1}, {2})", [1, 2]),
    # numbers
    "abs": ("abs(-2)", 2),
    "round": ("round(2.5)", 3),
    "ceil": ("ceil(1.2)", 2),
    "floor": ("floor(1.8)", 1),
    "numbers.range": ("numbers.range(1, 3)", [1, 2, 3]),
    "numbers.range_step": ("numbers.range_step(1, 6, 2)", [1, 3, 5]),
    "to_number": ('to_number("9.5")', 9.5),
    # aggregates
    "count": ("count([1, 2, 3])", 3),
    "sum": ("sum([1, 2, 3.5])", 6.5),
    "product": ("product([2, 3])", 6),
    "max": ("max([1, 3, 2])", 3),
    "min": ("min([2, 1, 3])", 1),
    "sort": ("sort([3, 1, 2])", [1, 2, 3]),
    # arrays, sets, objects
    "array.concat": ("array.concat([1], [2])", [1, 2]),
    "array.slice": ("array.slice([1, 2, 3, 4], 1, 3)", [2, 3]),
    "array.reverse": ("array.reverse([1, 2, 3])", [3, 2, 1]),
    "intersection": ("intersection({{1, 2}, {2, 3}})", [2]),
    "union": ("union({{1}, {2}})", [1, 2]),
    "object.get": ('object.get({"a": {"b": 1}}, ["a", "b"], 0)', 1),
    "object.remove": ('object.remove({"a": 1, "b": 2}, ["a"])', {"b": 2}),
    "object.filter": ('object.filter({"a": 1, "b": 2}, ["a"])', {"a": 1}),
    "object.union": ('object.union({"a": 1}, {"b": 2})', {"a": 1, "b": 2}),
    "object.union_n": ('object.union_n([{"a": 1}, {"a": 2}])', {"a": 2}),
    "object.keys": ('object.keys({"a": 1, "b": 2})', ["a", "b"]),
    "object.subset": ('object.subset({"a": 1, "b": 2}, {"a": 1})', True),
    "json.filter": ('json.filter({"a": {"b": 1, "c": 2}}, ["a/b"])', {"a": {"b": 1}}),
    "json.remove": ('json.remove({"a": {"b": 1, "c": 2}}, ["a/b"])', {"a": {"c": 2}}),
    "json.patch": (
        'json.patch({"a": 1}, [{"op": "add", "path": "/b", "value": 2}])',
        {"a": 1, "b": 2},
    ),
    "walk": ('[p | walk({"a": 1}, [p, v]); v == 1]', [["a"]]),
    "graph.reachable": (
        'graph.reachable({"a": ["b"], "b": ["c"], "c": []}, ["a"])',
        ["a", "b", "c"],
    ),
    "graph.reachable_paths": (
        'graph.reachable_paths({"a": ["b"], "b": []}, ["a"])',
        [["a", "b"]],
    ),
    # strings
    "concat": ('concat(", ", ["a", "b"])', "a, b"),
    "contains": ('contains("abc", "b")', True),
    "endswith": ('endswith("abc", "bc")', True),
    "startswith": ('startswith("abc", "ab")', True),
    "format_int": ("format_int(255, 16)", "ff"),
    "indexof": ('indexof("abcb", "b")', 1),
    "indexof_n": ('indexof_n("abcb", "b")', [1, 3]),
    "lower": ('lower("ABC")', "abc"),
    "upper": ('upper("abc")', "ABC"),
    "replace": ('replace("a-b-c", "-", "_")', "a_b_c"),
    "split": ('split("a,b", ",")', ["a", "b"]),
    "sprintf": ('sprintf("%s has %d (%v)", ["a", 2, true])', "a has 2 (true)"),
    "strings.any_prefix_match": ('strings.any_prefix_match("abc", ["x", "ab"])', True),
    "strings.any_suffix_match": ('strings.any_suffix_match("abc", ["x", "bc"])', True),
    "strings.count": ('strings.count("abab", "ab")', 2),
    "strings.replace_n": ('strings.replace_n({"a": "1", "b": "2"}, "ab")', "12"),
    "strings.reverse": ('strings.reverse("abc")', "cba"),
    "substring": ('substring("abcdef", 1, 3)', "bcd"),
    "trim": ('trim("xxaxx", "x")', "a"),
    "trim_left": ('trim_left("xxa", "x")', "a"),
    "trim_right": ('trim_right("axx", "x")', "a"),
    "trim_prefix": ('trim_prefix("prefix-a", "prefix-")', "a"),
    "trim_suffix": ('trim_suffix("a-suffix", "-suffix")', "a"),
    "trim_space": ('trim_space("  a  ")', "a"),
    # regular expressions and globs
    "regex.match": ('regex.match("^a+$", "aaa")', True),
    "regex.is_valid": ('regex.is_valid("(")', False),
    "regex.split": ('regex.split("[,;]", "a,b;c")', ["a", "b", "c"]),
    "regex.find_n": ('regex.find_n("[0-9]+", "a1b22c333", 2)', ["1", "22"]),
    "regex.find_all_string_submatch_n": (
        'regex.find_all_string_submatch_n("a(\\\\d)", "a1a2", -1)',
        [["a1", "1"], ["a2", "2"]],
    ),
    "regex.replace": ('regex.replace("a1b2", "[0-9]", "#")', "a#b#"),
    "regex.template_match": (
        'regex.template_match("urn:foo:{.*}", "urn:foo:bar:baz", "{", "}")',
        True,
    ),
    "regex.globs_match": ('regex.globs_match("a.a.[0-9]+z", ".b.b2359825792*594823z")', True),
    "glob.match": ('glob.match("*.example.com", ["."], "api.example.com")', True),
    "glob.quote_meta": ('glob.quote_meta("*.a")', "\\*.a"),
    # bits
    "bits.or": ("bits.or(1, 2)", 3),
    "bits.and": ("bits.and(3, 6)", 2),
    "bits.negate": ("bits.negate(0)", -1),
    "bits.xor": ("bits.xor(3, 5)", 6),
    "bits.lsh": ("bits.lsh(1, 3)", 8),
    "bits.rsh": ("bits.rsh(8, 2)", 2),
    # units
    "units.parse": ('units.parse("10m")', 0.01),
    "units.parse_bytes": ('units.parse_bytes("1KiB")', 1024),
    # types
    "is_number": ("is_number(1)", True),
    "is_string": ('is_string("a")', True),
    "is_boolean": ("is_boolean(false)", True),
    "is_array": ("is_array([1])", True),
    "is_set": ("is_set({1})", True),
    "is_object": ('is_object({"a": 1})', True),
    "is_null": ("is_null(null)", True),
    "type_name": ('type_name({"a": 1})', "object"),
    # encodings
    "base64.encode": ('base64.encode("hello")', "aGVsbG8="),
    "base64.decode": ('base64.decode("aGVsbG8=")', "hello"),
    "base64.is_valid": ('base64.is_valid("aGVsbG8=")', True),
    "base64url.encode": ('base64url.encode("??>")', "Pz8-"),
    "base64url.encode_no_pad": ('base64url.encode_no_pad("hello")', "aGVsbG8"),
    "base64url.decode": ('base64url.decode("Pz8-")', "??>"),
    "urlquery.encode": ('urlquery.encode("a b&c")', "a+b%26c"),
    "urlquery.encode_object": ('urlquery.encode_object({"a": "1 2"})', "a=1+2"),
    "urlquery.decode": ('urlquery.decode("a+b%26c")', "a b&c"),
    "urlquery.decode_object": ('urlquery.decode_object("a=1&b=2")', {"a": ["1"], "b": ["2"]}),
    "json.marshal": ('json.marshal({"a": [1, "b"]})', '{"a":[1,"b"]}'),
    "json.marshal_with_options": (
        'json.marshal_with_options({"a": 1}, {"pretty": false})',
        '{"a":1}',
    ),
    "json.unmarshal": ('json.unmarshal("{\\"a\\": [1, 2]}")', {"a": [1, 2]}),
    "json.is_valid": ('json.is_valid("{")', False),
    "yaml.marshal": ('yaml.marshal({"a": 1})', "a: 1\n"),
    "yaml.unmarshal": ('yaml.unmarshal("a: 1")', {"a": 1}),
    "yaml.is_valid": ('yaml.is_valid("a: 1")', True),
    "hex.encode": ('hex.encode("hi")', "6869"),
    "hex.decode": ('hex.decode("6869")', "hi"),
    # tokens (HS256 token of {"sub": "1"}, key "secret")
    "io.jwt.decode": (
        'io.jwt.decode("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.'
        '8qZF8vbN3UpcanXFc-mPXJkOPN01-bRch8XX3rToP1U")[1]',
        {"sub": "1"},
    ),
    "io.jwt.verify_hs256": (
        'io.jwt.verify_hs256("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.'
        '8qZF8vbN3UpcanXFc-mPXJkOPN01-bRch8XX3rToP1U", "secret")',
        True,
    ),
    # time (no clock: all from their arguments)
    "time.parse_ns": ('time.parse_ns("2006-01-02", "2026-12-04")', 1796342400000000000),
    "time.parse_rfc3339_ns": ('time.parse_rfc3339_ns("2026-12-04T17:00:00Z")', 1796403600000000000),
    "time.parse_duration_ns": ('time.parse_duration_ns("1h30m")', 5400000000000),
    "time.format": ('time.format([1796403600000000000, "UTC", "2006-01-02"])', "2026-12-04"),
    "time.date": ("time.date(1796403600000000000)", [2026, 12, 4]),
    "time.clock": ("time.clock(1796403600000000000)", [17, 0, 0]),
    "time.weekday": ("time.weekday(1796403600000000000)", "Friday"),
    "time.add_date": ("time.add_date(1796403600000000000, 0, 0, 1)", 1796490000000000000),
    "time.diff": ("time.diff(1796403600000000000, 1796490000000000000)", [0, 0, 1, 0, 0, 0]),
    # hashes
    "crypto.md5": ('crypto.md5("a")', "0cc175b9c0f1b6a831c399e269772661"),
    "crypto.sha1": ('crypto.sha1("a")', "86f7e437faa5a7fce15d1ddcb9eaeaea377667b8"),
    "crypto.sha256": (
        'crypto.sha256("a")',
        "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
    ),
    "crypto.hmac.sha256": (
        'crypto.hmac.sha256("a", "k")',
        "78da91511e675587f5b9df78bedebaf5560da2abb88162ee875dcdf744951d9e",
    ),
    "crypto.hmac.md5": ('crypto.hmac.md5("a", "k")', "ddcf3d210049e7135f61affae73731cd"),
    "crypto.hmac.sha1": ('crypto.hmac.sha1("a", "k")', "40e7d441cadb17b07f050341aa23a6820ed81c8b"),
    "crypto.hmac.sha512": (
        'crypto.hmac.sha512("a", "k")',
        "82e0c15e0d62ab17984bea225bf7d28ad54f343dd6520c283c3a2cd43852a2f79c349cc9b7583317399ee38d722489b45a942667e55bc38c42a5bb203c0900c7",
    ),
    "crypto.hmac.equal": ('crypto.hmac.equal("ab", "ab")', True),
    # networks, identifiers, versions
    "uuid.parse": (
        'uuid.parse("00000000-0000-4000-8000-000000000000").version',
        4,
    ),
    "semver.is_valid": ('semver.is_valid("1.2.3")', True),
    "semver.compare": ('semver.compare("1.2.3", "1.10.0")', -1),
    "print": ('[1 | print("probe")]', [1]),  # its output goes nowhere in the worker
    "internal.member_2": ('internal.member_2("a", ["a"])', True),
    "internal.member_3": ('internal.member_3(0, "a", ["a"])', True),
}


def probe(name: str) -> tuple[bool, str]:
    """Whether regopy gives OPA's value for the probe of `name`, and what it gave."""
    import json

    from quartermaster.policy.engine import evaluate_rule

    expression, expected = PROBES[name]
    try:
        got = evaluate_rule(f"out := [{expression}]", "out")
    except Exception as exc:  # what the probe is for
        return False, f"{type(exc).__name__}: {exc}"
    if not isinstance(got, list):
        return False, "undefined"
    return _same(got[0], expected), json.dumps(got[0])


def _same(got: Any, expected: Any) -> bool:
    if isinstance(expected, list) and isinstance(got, list) and len(got) == len(expected):
        if all(_same(g, e) for g, e in zip(got, expected, strict=True)):
            return True
        try:
            return sorted(map(repr, got)) == sorted(map(repr, expected))
        except TypeError:
            return False
    if isinstance(expected, dict) and isinstance(got, dict):
        return got.keys() == expected.keys() and all(_same(got[k], expected[k]) for k in got)
    if isinstance(expected, bool) or isinstance(got, bool):
        return got is expected
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)):
        return abs(got - expected) < 1e-9
    return bool(got == expected)


if __name__ == "__main__":
    for key in sorted(PROBES):
        fine, shown = probe(key)
        print(f"{'ok ' if fine else 'BAD'} {key}: {shown}")
