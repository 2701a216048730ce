from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    """Page-number pagination that refuses what it cannot honour: `page` and `page_size` must each be given
    at most once, as whole numbers >= 1 (`page_size` <= 500), else 400; a page past the end is 404. The
    schema states the same bounds, so a client written from it never sends what the server would refuse."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def paginate_queryset(self, queryset, request, view=None):
        self._check(request)
        return super().paginate_queryset(queryset, request, view=view)

    def _check(self, request) -> None:
        errors = {}
        for name, most in ((self.page_query_param, None), (self.page_size_query_param, self.max_page_size)):
            values = request.query_params.getlist(name)
            if len(values) > 1:
                errors[name] = "give it once"
            elif values and not (values[0].isdigit() and 1 <= int(values[0]) <= (most or 2**31 - 1)):
                errors[name] = f"a whole number from 1{f' to {most}' if most else ''}"
        if errors:
            raise ValidationError(errors)

    def get_schema_operation_parameters(self, view):
        params = super().get_schema_operation_parameters(view)
        for param in params:
            param["schema"]["minimum"] = 1
            param["schema"]["maximum"] = self.max_page_size if param["name"] == "page_size" else 2**31 - 1
        return params


def paginated_response(*, request, view, queryset, serialize):
    """Paginate `queryset` for an APIView; `serialize(page)` returns the serialized list. The view declares
    `pagination_class = Pagination`, so its schema documents the envelope ({count, next, previous,
    results}) and the page parameters."""
    assert getattr(view, "pagination_class", None) is Pagination, f"{type(view).__name__}.pagination_class"
    paginator = Pagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serialize(page))
