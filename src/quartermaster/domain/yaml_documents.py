"""YAML as users write it in documents we validate (manifests, price books).

PyYAML's safe loader turns an unquoted `2026-02-28` into a `datetime.date` and raises
ValueError for one that does not exist (`2026-02-30`), before any schema can name the field.
Documents we accept hold dates as ISO strings, so the loaders here keep every timestamp as
the string that was written and let the schema judge it like a quoted one.
"""

from __future__ import annotations

import yaml

_YAML_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class StringTimestampLoader(yaml.SafeLoader):
    """SafeLoader whose timestamps stay strings (see the module docstring)."""


StringTimestampLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _YAML_TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
