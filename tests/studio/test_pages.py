"""Who may use the prompt studio's pages and socket: operators only. Agents and staff without
a role get a 403, a customer's visitor cookie opens nothing."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User
from django.test import Client

from studio import consumers, services
from studio.models import EvalRun, PromptVersion
from studio.models import TestCase as Case
from studio.models import TestSet as CaseSet
from tests import personas
from tests.conftest import ORIGIN, visitor_cookie_header
from tests.inbox.test_permissions import closed_with, customer_client, session_cookie

alice_agent = personas.alice_agent
olivia_operator = personas.olivia_operator
oscar_outsider = personas.oscar_outsider

PAGES = ("/studio/playground/", "/studio/evaluations/")


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def version(db: None) -> PromptVersion:
    return services.create_draft(by=None, name="Friendly", system_prompt="Be kind at {company}.")


@pytest.fixture
def test_set(db: None) -> CaseSet:
    test_set = CaseSet.objects.create(name="Refunds")
    Case.objects.create(test_set=test_set, message="Where is my refund?", must_contain=["refund"])
    return test_set


@pytest.mark.django_db
def test_operators_open_the_playground_and_the_evaluations(olivia_operator, version, test_set):
    client = logged_in(olivia_operator)
    playground = client.get("/studio/playground/")
    assert playground.status_code == 200
    html = playground.content.decode()
    assert 'data-ws-path="/ws/studio/"' in html and "Friendly (#" in html and ">Send<" in html
    evaluations = client.get("/studio/evaluations/")
    assert evaluations.status_code == 200
    assert "Refunds" in evaluations.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["alice_agent", "oscar_outsider"])
def test_agents_and_outsiders_get_a_403_and_start_nothing(persona, request, version, test_set):
    client = logged_in(request.getfixturevalue(persona))
    for url in PAGES:
        response = client.get(url)
        assert response.status_code == 403, url
        assert "Friendly" not in response.content.decode()
    response = client.post(
        "/studio/evaluations/run/", {"version": version.pk, "test_set": test_set.pk}
    )
    assert response.status_code == 403
    assert not EvalRun.objects.exists()


@pytest.mark.django_db
def test_a_customer_cookie_opens_nothing(alice, version, test_set):
    client = customer_client(alice)
    for url in PAGES:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    response = client.post(
        "/studio/evaluations/run/", {"version": version.pk, "test_set": test_set.pk}
    )
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert not EvalRun.objects.exists()


@pytest.mark.django_db
def test_an_operator_starts_a_run_from_the_page(olivia_operator, version, test_set, monkeypatch):
    queued: list[int] = []
    monkeypatch.setattr("studio.tasks.run_evaluation.delay", queued.append)
    client = logged_in(olivia_operator)
    with_run = client.post(
        "/studio/evaluations/run/", {"version": version.pk, "test_set": test_set.pk}
    )
    run = EvalRun.objects.get()
    assert with_run.status_code == 302 and with_run["Location"].endswith(f"?run={run.pk}")
    assert run.started_by == olivia_operator and run.total == 1 and run.status == "queued"
    page = client.get(with_run["Location"]).content.decode()
    assert '<progress id="run-progress" max="1" value="0"' in page
    assert 'aria-label="Evaluation progress"' in page


@pytest.mark.django_db(transaction=True)
def test_a_run_the_task_queue_cannot_take_is_stored_failed_and_the_page_says_so(
    olivia_operator, version, test_set, monkeypatch
):
    from kombu.exceptions import OperationalError

    def broker_down(run_id):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("studio.tasks.run_evaluation.delay", broker_down)
    client = logged_in(olivia_operator)
    response = client.post(
        "/studio/evaluations/run/", {"version": version.pk, "test_set": test_set.pk}, follow=True
    )
    assert response.status_code == 200
    assert services.NOT_QUEUED in response.content.decode().replace("&#x27;", "'")
    run = EvalRun.objects.get()  # stored, and not left queued for a task that never comes
    assert (run.status, run.error) == ("failed", services.NOT_QUEUED)
    assert run.finished_at is not None


# --- The socket -------------------------------------------------------------------------------


async def open_studio(cookie: str | None, origin: str | None = ORIGIN) -> WebsocketCommunicator:
    from support_bot.asgi import application

    headers = []
    if origin:
        headers.append((b"origin", origin.encode()))
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    return WebsocketCommunicator(application, "/ws/studio/", headers)


@pytest.mark.django_db(transaction=True)
async def test_the_socket_closes_4401_for_a_customer_and_without_login(alice):
    cookie = visitor_cookie_header(alice).decode()
    assert await closed_with(await open_studio(cookie)) == 4401
    assert await closed_with(await open_studio(None)) == 4401


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("persona", ["alice_agent", "oscar_outsider"])
async def test_the_socket_closes_4403_for_agents_and_outsiders(persona, request):
    user = await database_sync_to_async(request.getfixturevalue)(persona)
    cookie = await database_sync_to_async(session_cookie)(user)
    assert await closed_with(await open_studio(cookie)) == 4403


@pytest.mark.django_db(transaction=True)
async def test_the_socket_refuses_a_foreign_origin(olivia_operator):
    cookie = await database_sync_to_async(session_cookie)(olivia_operator)
    connected, _ = await (await open_studio(cookie, origin="https://evil.example")).connect(5)
    assert not connected


@pytest.mark.django_db(transaction=True)
async def test_an_operator_socket_queues_a_playground_request_of_its_own(
    olivia_operator, version, monkeypatch
):
    queued: list[tuple] = []
    monkeypatch.setattr(consumers, "_enqueue", lambda rid, args: queued.append((rid, args)))
    cookie = await database_sync_to_async(session_cookie)(olivia_operator)
    socket = await open_studio(cookie)
    assert (await socket.connect(timeout=5))[0]
    hello = await socket.receive_json_from(timeout=5)
    assert hello == {
        "type": "hello",
        "permissions": ["studio.run_evaluation", "studio.use_playground"],
    }
    await socket.send_json_to({"type": "playground", "version_id": 999999, "message": "Hi"})
    error = await socket.receive_json_from(timeout=5)
    assert error["type"] == "error" and error["code"] == "unknown_version"
    await socket.send_json_to({"type": "playground", "version_id": version.pk, "message": ""})
    assert (await socket.receive_json_from(timeout=5))["code"] == "empty_text"
    await socket.send_json_to(
        {"type": "playground", "version_id": version.pk, "message": "Where is my refund?"}
    )
    accepted = await socket.receive_json_from(timeout=5)
    assert accepted["type"] == "playground.accepted"
    assert queued == [(accepted["request_id"], (version.pk, None, "Where is my refund?"))]
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_user_with_only_run_evaluation_cannot_use_the_playground(oscar_outsider, version):
    def grant():
        oscar_outsider.user_permissions.add(
            Permission.objects.get(codename="run_evaluation", content_type__app_label="studio")
        )
        return session_cookie(User.objects.get(pk=oscar_outsider.pk))

    cookie = await database_sync_to_async(grant)()
    socket = await open_studio(cookie)
    assert (await socket.connect(timeout=5))[0]
    assert (await socket.receive_json_from(timeout=5))["permissions"] == ["studio.run_evaluation"]
    await socket.send_json_to({"type": "playground", "version_id": version.pk, "message": "Hi"})
    assert (await socket.receive_json_from(timeout=5))["code"] == "forbidden"
    await socket.disconnect()


@pytest.mark.django_db
def test_a_finished_run_is_shown_side_by_side_with_the_active_versions_last_run(
    olivia_operator, test_set
):
    from django.utils import timezone

    from studio.models import EvalResult

    def version(name: str) -> PromptVersion:
        return services.publish(services.create_draft(by=None, name=name), by=None)

    active, candidate = version("Current"), version("Candidate")
    services.activate(active, by=None, allow_worse=True)
    case = test_set.cases.get()
    runs = {}
    for v, score, text in ((active, 1.0, "Your refund is on its way"), (candidate, 0.0, "No")):
        run = EvalRun.objects.create(
            version=v,
            test_set=test_set,
            status="done",
            done=1,
            total=1,
            scores={"overall": score, "must_contain": score},
            finished_at=timezone.now(),
        )
        EvalResult.objects.create(
            run=run, case=case, reply=text, checks={"must_contain": bool(score)}, passed=bool(score)
        )
        runs[v.pk] = run
    page = logged_in(olivia_operator).get(f"/studio/evaluations/?run={runs[candidate.pk].pk}")
    html = page.content.decode()
    assert page.status_code == 200
    assert f"Active version (run #{runs[active.pk].pk})" in html
    assert "<td>0.00</td>\n                  <td>1.00</td><td>-1.00</td>" in html
    assert "Your refund is on its way" in html and "Contains phrases" in html


@pytest.mark.django_db
def test_operators_manage_test_sets_and_read_runs_in_the_admin(olivia_operator, test_set):
    client = logged_in(olivia_operator)
    change = client.get(f"/admin/studio/testset/{test_set.pk}/change/")
    assert change.status_code == 200 and "Where is my refund?" in change.content.decode()
    assert client.get("/admin/studio/evalrun/").status_code == 200
    assert client.get("/admin/studio/evalrun/add/").status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize("run_id", ["²", "1\n", "9" * 30])
def test_the_evaluations_page_ignores_a_run_id_that_is_no_id(olivia_operator, run_id):
    page = logged_in(olivia_operator).get("/studio/evaluations/", {"run": run_id})
    assert page.status_code == 200
    assert page.context["run"] is None


@pytest.mark.django_db
@pytest.mark.parametrize("version_id", ["²", "9" * 30])
def test_starting_a_run_with_a_version_id_that_is_no_id_starts_nothing(
    olivia_operator, test_set, version_id
):
    answer = logged_in(olivia_operator).post(
        "/studio/evaluations/run/", {"version": version_id, "test_set": str(test_set.pk)}
    )
    assert answer.status_code == 302
    assert not EvalRun.objects.exists()
