# -*- test-case-name: tests.test_plugins -*-
"""
A plugin's ``settings`` checked against its ``settings_schema``
(:func:`validate_settings`), as :mod:`tproxy.plugins` makes each plugin.
Valid settings are kept, as the JSON text of their completed form, for the
next start, reload or test harness that gives the same ones.
"""

import json

from tproxy.config import ConfigError, _plain_json_text
from tproxy.schema_checks import fill_defaults, schema_errors, validator_for


def validate_settings(name, schema, settings, settings_path, path):
    """
    The settings of the plugin ``name`` checked against its
    ``settings_schema`` ``schema``, its defaults filled in (a new ``dict``).

    :param settings_path: the JSON path of the settings, which the problems'
        paths start with (``plugins[2].settings``).
    :param path: the JSON path of the plugin's entry (for a schema that is
        not valid itself).
    :raises ConfigError: one ``(path, problem)`` per problem, naming the plugin.
    """
    try:
        validator = validator_for(schema)
    except Exception as e:
        raise ConfigError((path, "plugin {!r} has an invalid settings_schema: "
                           "{}".format(name, getattr(e, "message", e))))
    # The same settings come back at every start, reload and test harness:
    # valid ones are kept as the JSON text of their completed form, parsed
    # again (a new dict each time) instead of validated again, as
    # tproxy.config.validate_config does for the configuration.
    key = _plain_json_text(settings) if _reads_only_settings(validator) else None
    if key is not None:
        done = _VALIDATED_SETTINGS.get((id(validator), key))
        if done is not None and done[0] is validator:
            return json.loads(done[1])
    errors = schema_errors(validator, settings, prefix=settings_path)
    if errors:
        raise ConfigError([(p, "{} (plugin {!r})".format(problem, name))
                           for p, problem in errors])
    settings = fill_defaults(validator, schema, settings)
    text = _plain_json_text(settings) if key is not None else None
    if text is not None:
        if len(_VALIDATED_SETTINGS) >= 256:
            _VALIDATED_SETTINGS.clear()
        _VALIDATED_SETTINGS[(id(validator), key)] = (validator, text)
    return settings


#: ``(id of the validator, JSON text of valid settings)`` -> ``(the
#: validator, JSON text of the settings completed)``
_VALIDATED_SETTINGS = {}


def _reads_only_settings(validator):
    """Whether checking settings against ``validator`` reads nothing but
    the settings: not where its schema has the ``tproxy-endpoint`` format,
    whose check of an ``ssl:`` endpoint reads certificate files (which may
    have changed since)."""
    seen = _READS_ONLY_SETTINGS.get(id(validator))
    if seen is None or seen[0] is not validator:
        if len(_READS_ONLY_SETTINGS) >= 256:
            _READS_ONLY_SETTINGS.clear()
        seen = _READS_ONLY_SETTINGS[id(validator)] = (
            validator, "tproxy-endpoint" not in repr(validator.schema))
    return seen[1]


#: ``id`` of a validator -> ``(the validator, _reads_only_settings's answer)``
_READS_ONLY_SETTINGS = {}
