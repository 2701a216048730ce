from rest_framework import serializers


def query_params(serializer_class: type[serializers.Serializer], request) -> dict:
    """The request's query parameters validated by `serializer_class`. A declared parameter sent empty
    (`?split=`) is refused like any other bad value: DRF would read it as absent, and the client would
    believe it had filtered."""
    names: list[str] = list(serializer_class().fields)
    empty = {name: ["must not be empty"] for name in names if request.query_params.get(name) == ""}
    if empty:
        raise serializers.ValidationError(empty)
    params = serializer_class(data=request.query_params)
    params.is_valid(raise_exception=True)
    return params.validated_data
