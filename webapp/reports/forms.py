import json

from django import forms
from django.conf import settings

from training import safejson
from webapp.reports.importing import ReportError, check


class ImportForm(forms.Form):
    file = forms.FileField(help_text="A report's JSON, as downloaded from a ptlab experiment (Download → JSON).")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        most = settings.PTLAB_MAX_IMPORT_BYTES
        if upload.size > most:
            raise forms.ValidationError(f"The file has {upload.size} bytes: at most {most} (PTLAB_MAX_IMPORT_BYTES).")
        try:
            doc = safejson.loads(upload.read().decode("utf-8-sig"), max_depth=settings.PTLAB_MAX_JSON_DEPTH)
            check(doc)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise forms.ValidationError("Not a JSON file.") from None
        except safejson.JSONLimitError as exc:
            raise forms.ValidationError(f"Not accepted: {exc}") from None
        except ReportError as exc:
            raise forms.ValidationError(str(exc)) from None
        self.cleaned_data["document"] = doc
        return upload
