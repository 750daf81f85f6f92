from django.contrib import admin

from webapp.ratings.models import Invitation, RatingSetup, Vote


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ("experiment", "rater", "invited_by", "created")
    raw_id_fields = ("experiment", "rater", "invited_by")


@admin.register(RatingSetup)
class RatingSetupAdmin(admin.ModelAdmin):
    list_display = ("experiment", "what", "include_base", "updated")
    raw_id_fields = ("experiment",)


@admin.register(Vote)
class VoteAdmin(admin.ModelAdmin):
    list_display = ("experiment", "rater", "step", "prompt_id", "first", "second", "outcome", "revisions", "updated")
    list_filter = ("outcome",)
    raw_id_fields = ("experiment", "rater")
