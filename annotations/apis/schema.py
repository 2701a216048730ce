from drf_spectacular.openapi import AutoSchema as BaseAutoSchema


class AutoSchema(BaseAutoSchema):
    """Name nested `InputSerializer`/`OutputSerializer` classes after their view (ProjectListApiInput, ...),
    so every view can use the house-style names without colliding in the OpenAPI components."""

    def get_serializer_name(self, serializer, direction):
        qualname = type(serializer).__qualname__
        if "." in qualname:
            return qualname.replace(".", "").replace("Serializer", "")
        return super().get_serializer_name(serializer, direction)
