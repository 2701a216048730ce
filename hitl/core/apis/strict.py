"""Input serializers that take JSON as JSON: a number field refuses `false` and `"12"`, a boolean refuses
`"yes"`, a text field refuses `7`. DRF coerces all of these; a client written from the OpenAPI schema
relies on the types it states, and a coerced value hides the client's bug."""

from typing import Any

from rest_framework import serializers

_TEXT_FIELDS = (serializers.CharField, serializers.DateField, serializers.DateTimeField)


def _type_error(field: serializers.Field, value: Any) -> str | None:
    """What is wrong with the JSON type of `value` for `field`, or None."""
    if value is None:
        return None  # null: DRF applies allow_null itself
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(field, serializers.IntegerField):
        return None if isinstance(value, int) and not isinstance(value, bool) else "expected an integer"
    if isinstance(field, serializers.FloatField | serializers.DecimalField):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "expected a number"
    if isinstance(field, serializers.ChoiceField) and all(isinstance(k, str) for k in field.choices):
        return None if isinstance(value, str) else "expected a string"
    if isinstance(field, _TEXT_FIELDS):
        return None if isinstance(value, str) else "expected a string"
    if isinstance(field, serializers.ListField | serializers.ListSerializer):
        if not isinstance(value, list):
            return "expected a list"
        child = field.child
        if child is None:
            return None
        return next((f"item {i}: {e}" for i, v in enumerate(value) if (e := _type_error(child, v))), None)
    if isinstance(field, serializers.DictField | serializers.Serializer):
        return None if isinstance(value, dict) else "expected an object"
    return None


class StrictSerializer(serializers.Serializer):
    """Checks the JSON type of every declared field present in a JSON body before DRF converts it (form and
    query data, which are all strings, are left to DRF)."""

    def to_internal_value(self, data):
        if isinstance(data, dict) and not hasattr(data, "getlist"):
            errors = {
                name: [error]
                for name, field in self.fields.items()
                if name in data and not field.read_only and (error := _type_error(field, data[name]))
            }
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class DistinctListField(serializers.ListField):
    """A list whose items must differ (the schema says uniqueItems; the service refuses repeats)."""

    unique_items = True
