#!/usr/bin/env python3
"""Fills envoy/bootstrap.yaml's {{PLACEHOLDERS}} from KEY=VALUE arguments; prints the result."""
import re
import sys

def render(template: str, values: dict) -> str:
    def sub(m):
        key = m.group(1)
        if key not in values:
            sys.exit(f"render-bootstrap: no value for {{{{{key}}}}}")
        return str(values[key])
    return re.sub(r"\{\{([A-Z_]+)\}\}", sub, template)

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: render-bootstrap.py TEMPLATE KEY=VALUE...")
    values = dict(a.split("=", 1) for a in sys.argv[2:])
    sys.stdout.write(render(open(sys.argv[1]).read(), values))
