import json

from django import forms

from webapp.reports.importing import ReportError, check

MAX_BYTES = 200 * 2**20


class ImportForm(forms.Form):
    file = forms.FileField(help_text="A report's JSON, as downloaded from a ptlab experiment (Download → JSON).")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_BYTES:
            raise forms.ValidationError("The file is larger than 200 MB.")
        try:
            doc = json.loads(upload.read().decode("utf-8"))
            check(doc)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise forms.ValidationError("Not a JSON file.") from None
        except ReportError as exc:
            raise forms.ValidationError(str(exc)) from None
        self.cleaned_data["document"] = doc
        return upload
