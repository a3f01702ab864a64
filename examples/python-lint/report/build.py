import os
import json


def build(rows):
    return json.dumps({"rows": rows, "count": len(rows)})
