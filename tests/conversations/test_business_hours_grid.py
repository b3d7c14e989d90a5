"""Business hours as a weekly grid in the admin (issue 17, point 8): Mon–Sun on one page with
the support time zone shown, up to two periods a day, validation that stores nothing, the week
saved in one transaction and read by the bot from the next message."""

from __future__ import annotations

from datetime import time

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from conversations import business_hours
from conversations.models import BusinessHours
from tests import personas

pytestmark = pytest.mark.django_db

olivia_operator = personas.olivia_operator
alice_agent = personas.alice_agent
oscar_outsider = personas.oscar_outsider

GRID = "/admin/conversations/businesshours/"
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


@pytest.fixture
def operator_client(olivia_operator) -> Client:
    client = Client()
    client.force_login(olivia_operator)
    return client


def week(**days: list[tuple[str, str]]) -> dict[str, str]:
    """The grid as the browser posts it: days given as mon=[("09:00", "17:00")], the rest closed."""
    data = {"ranges": "2"}
    for day, name in enumerate(DAYS):
        periods = days.get(name[:3].lower())
        if periods:
            data[f"d{day}_open"] = "on"
        for n in (1, 2):
            opens, closes = periods[n - 1] if periods and len(periods) >= n else ("", "")
            data[f"d{day}_opens{n}"] = opens
            data[f"d{day}_closes{n}"] = closes
    return data


def stored() -> list[tuple[int, time, time]]:
    return list(
        BusinessHours.objects.order_by("weekday", "opens").values_list("weekday", "opens", "closes")
    )


def test_it_shows_the_whole_week_with_the_time_zone(operator_client, settings):
    settings.SUPPORT_TIME_ZONE = "Europe/Berlin"
    BusinessHours.objects.create(weekday=0, opens=time(9), closes=time(12))
    BusinessHours.objects.create(weekday=0, opens=time(13), closes=time(17, 30))
    page = operator_client.get(GRID)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Time zone: Europe/Berlin" in html
    for name in DAYS:
        assert f'<th scope="row">{name}</th>' in html
    assert 'name="d0_open" id="id_d0_open" checked' in html
    assert 'name="d0_opens1" value="09:00"' in html and 'name="d0_closes2" value="17:30"' in html
    assert 'name="d1_open" id="id_d1_open">' in html  # Tuesday closed


def test_it_saves_a_week_with_a_lunch_break_in_one_transaction(operator_client):
    BusinessHours.objects.create(weekday=6, opens=time(10), closes=time(11))  # replaced
    assert business_hours.business_hours() == ((6, time(10), time(11)),)  # cached now
    data = week(
        mon=[("09:00", "12:00"), ("13:00", "17:30")],
        tue=[("09:00", "17:00")],
        sat=[("10:00", "14:00")],
    )
    data["d3_opens1"] = "08:00"  # a closed day's times are ignored, not stored
    data["d3_closes1"] = "09:00"
    with CaptureQueriesContext(connection) as queries:
        response = operator_client.post(GRID, data)
    assert response.status_code == 302
    assert stored() == [
        (0, time(9), time(12)),
        (0, time(13), time(17, 30)),
        (1, time(9), time(17)),
        (5, time(10), time(14)),
    ]
    sql = [q["sql"].upper() for q in queries.captured_queries]
    writes = [i for i, q in enumerate(sql) if q.startswith(("DELETE", "INSERT"))]
    begin = [i for i, q in enumerate(sql) if "SAVEPOINT" in q or q.startswith("BEGIN")]
    assert begin and begin[0] < writes[0]  # the delete and the inserts share one transaction
    assert len([q for q in sql if q.startswith("INSERT") and "BUSINESSHOURS" in q]) == 1  # bulk
    # Every process reads the new week (the configuration cache was told on commit).
    assert business_hours.business_hours()[0] == (0, time(9), time(12))
    assert "The business hours are saved." in operator_client.get(GRID).content.decode()


@pytest.mark.parametrize(
    ("days", "error"),
    [
        ({"mon": [("17:00", "09:00")]}, "Monday: closes at 09:00, not after it opens at 17:00."),
        (
            {"tue": [("09:00", "13:00"), ("12:00", "18:00")]},
            "Tuesday: 09:00–13:00 and 12:00–18:00 overlap.",
        ),
        ({"wed": [("09:00", "")]}, "Wednesday: give both the opening and the closing time."),
        ({"thu": [("", "")]}, "Thursday is open: give its opening hours."),
        ({"fri": [("9 am", "17:00")]}, "Enter a valid time."),
        ({}, "Every day is closed. Open at least one day, or tick"),
    ],
)
def test_it_refuses_a_bad_week_with_a_form_error_and_keeps_the_old_one(
    operator_client, days, error
):
    BusinessHours.objects.create(weekday=0, opens=time(8), closes=time(16))
    data = week(sat=[("10:00", "12:00")], **days)
    if days == {}:
        data = week()
    if "thu" in days:
        data["d3_open"] = "on"
    response = operator_client.post(GRID, data)
    assert response.status_code == 200
    html = response.content.decode()
    assert error in html, html[html.find("errornote") - 200 : html.find("errornote") + 800]
    assert stored() == [(0, time(8), time(16))]  # nothing of the bad week stored


def test_it_makes_the_team_always_available_when_always_open_is_ticked(operator_client):
    BusinessHours.objects.create(weekday=0, opens=time(8), closes=time(16))
    data = {**week(mon=[("17:00", "09:00")]), "always_open": "on"}  # the days are ignored
    assert operator_client.post(GRID, data).status_code == 302
    assert stored() == []
    assert business_hours.availability().open_now
    page = operator_client.get(GRID).content.decode()
    assert 'name="always_open" id="id_always_open" checked' in page


def test_it_reads_the_grid_in_a_fixed_number_of_queries(
    operator_client, django_assert_max_num_queries
):
    for day in range(7):
        BusinessHours.objects.create(weekday=day, opens=time(9), closes=time(12))
        BusinessHours.objects.create(weekday=day, opens=time(13), closes=time(17))
    with django_assert_max_num_queries(6):  # session, user, permissions, the rows
        assert operator_client.get(GRID).status_code == 200


def test_only_staff_allowed_to_change_hours_can_save_the_grid(alice_agent, oscar_outsider):
    BusinessHours.objects.create(weekday=0, opens=time(8), closes=time(16))
    for user in (alice_agent, oscar_outsider):
        client = Client()
        client.force_login(user)
        assert client.get(GRID).status_code == 403
        assert client.post(GRID, week(tue=[("09:00", "17:00")])).status_code == 403
    assert stored() == [(0, time(8), time(16))]


def test_adding_a_single_row_leads_to_the_grid(operator_client):
    response = operator_client.get("/admin/conversations/businesshours/add/")
    assert response.status_code == 302 and response["Location"] == GRID
