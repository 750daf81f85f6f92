"""The experiment list page's search, filters and sort."""

from __future__ import annotations

from django import forms


class ExperimentListForm(forms.Form):
    """The list page's search, filters and sort (GET). Unknown values fall back to the defaults."""

    ARCHIVED = (("", "Not archived"), ("only", "Archived only"), ("all", "All"))
    OWNERS = (("", "Anyone"), ("me", "Mine"), ("shared", "Shared with me"))
    SORT = (("-created", "Newest"), ("created", "Oldest"), ("name", "Name A–Z"), ("-name", "Name Z–A"),
            ("-reward", "Best reward"), ("reward", "Lowest best reward"))

    q = forms.CharField(required=False, max_length=200, label="Search")
    state = forms.ChoiceField(required=False, choices=[("", "Any state")])
    owner = forms.ChoiceField(required=False, choices=OWNERS)
    tag = forms.CharField(required=False, max_length=40)
    archived = forms.ChoiceField(required=False, choices=ARCHIVED)
    starred = forms.BooleanField(required=False, label="Starred only")
    sort = forms.ChoiceField(required=False, choices=SORT)

    def __init__(self, *args, tags: list[str] = (), **kwargs):
        from webapp.experiments.models import LIST_STATES

        super().__init__(*args, **kwargs)
        self.fields["state"].choices = [("", "Any state")] + [(s, s) for s in LIST_STATES]
        self.tag_choices = list(tags)

    def values(self) -> dict:
        """The cleaned values, with the defaults for whatever was invalid."""
        self.is_valid()
        return {name: self.cleaned_data.get(name, "") or ("-created" if name == "sort" else "")
                for name in self.fields}

    def filter(self, qs, user):
        """`qs` (the experiments visible to `user`) narrowed and sorted by the values. No grouping: the
        list pages through ids of this, then annotates only the rows of the page."""
        from webapp.experiments.models import SORTS

        v = self.values()
        if v["q"]:
            qs = qs.search(v["q"])
        if v["state"]:
            qs = qs.in_state(v["state"])
        if v["owner"] == "me":
            qs = qs.filter(owner=user)
        elif v["owner"] == "shared":
            qs = qs.exclude(owner=user)
        if v["tag"]:
            qs = qs.tagged(v["tag"])
        if v["archived"] == "":
            qs = qs.filter(archived=False)
        elif v["archived"] == "only":
            qs = qs.filter(archived=True)
        if v["starred"]:
            qs = qs.starred_by_user(user)
        if "reward" in v["sort"]:
            qs = qs.with_best_reward()
        return qs.order_by(*SORTS[v["sort"]])
