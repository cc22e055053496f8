import json

from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from .forms import NoteForm
from .models import Note

# Enough to show the list working without letting a long-lived demo DB
# turn the page into a huge response.
NOTES_SHOWN = 100


def index(request):
    return render(request, "demo/index.html", {"now": timezone.now()})


def notes(request):
    if request.method == "POST":
        form = NoteForm(request.POST)
        if form.is_valid():
            form.save()
            # Post/redirect/get, so reloading the page does not resubmit.
            return redirect("notes")
        status = 400
    else:
        form = NoteForm()
        status = 200
    context = {"form": form, "notes": Note.objects.all()[:NOTES_SHOWN]}
    return render(request, "demo/notes.html", context, status=status)


@csrf_exempt  # Server tests post raw bodies without a browser session.
def echo(request):
    """Report how the request reached Django, for checking the server's WSGI environ: JSON,
    or for a browser a page showing it, with the site's navigation."""
    facts = {
        "method": request.method,
        "path": request.path,
        "path_info": request.path_info,
        "script_name": request.META.get("SCRIPT_NAME", ""),
        "query": dict(request.GET.lists()),
        "remote_addr": request.META.get("REMOTE_ADDR"),
        "scheme": request.scheme,
        "host": request.get_host(),
        "body_length": len(request.body),
    }
    if "text/html" in request.META.get("HTTP_ACCEPT", ""):
        shown = json.dumps(facts, indent=2)
        return render(request, "demo/echo.html", {"facts": shown})
    return JsonResponse(facts)
