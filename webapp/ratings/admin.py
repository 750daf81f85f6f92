from django.contrib import admin

from webapp.ratings.models import Invitation, JudgeJob, RatingSetup, Vote


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


@admin.register(JudgeJob)
class JudgeJobAdmin(admin.ModelAdmin):
    list_display = ("experiment", "model", "mode", "state", "progress", "votes", "requested_by", "created")
    list_filter = ("state", "mode")
    raw_id_fields = ("experiment", "requested_by")
