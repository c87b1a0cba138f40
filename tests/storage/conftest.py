from tests.scale import conftest as _scale

pg_url = _scale.pg_url
