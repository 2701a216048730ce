from django.http import HttpResponse


def png_response(data: bytes) -> HttpResponse:
    """A PNG layer of a case (private: it shows patient pixels; cached briefly by the reader's browser)."""
    response = HttpResponse(data, content_type="image/png")
    response["Cache-Control"] = "private, max-age=600"
    return response
