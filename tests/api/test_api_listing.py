"""Richer tasks (priority, due date, tags) and listing (filters, sorts, keyset pages), on both databases."""

from __future__ import annotations

import base64
import itertools
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.support.http import assert_problem, create

Client = AsyncTestClient[Litestar]
Auth = Callable[..., dict[str, str]]

# -- priority, due date, tags --------------------------------------------------------------------------------


async def test_new_fields_have_defaults(client: Client, auth: Auth, new_user: Any) -> None:
    task = await create(client, auth, new_user())
    assert (task["priority"], task["due_date"], task["tags"]) == ("medium", None, [])


async def test_new_fields_round_trip(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    task = await create(
        client, auth, user, priority="high", due_date="2026-12-24T18:30:00+01:00", tags=[" Home ", "errands", "Ünï"]
    )
    assert task["priority"] == "high"
    assert task["due_date"] == "2026-12-24T17:30:00Z"  # returned in UTC
    assert task["tags"] == ["Home", "errands", "Ünï"]  # trimmed, order kept
    assert (await client.get(f"/api/{user}/tasks/{task['id']}", headers=auth(user))).json() == task


async def test_bare_date_means_midnight_utc(client: Client, auth: Auth, new_user: Any) -> None:
    assert (await create(client, auth, new_user(), due_date="2026-12-24"))["due_date"] == "2026-12-24T00:00:00Z"


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_new_fields_update_and_clear(client: Client, auth: Auth, new_user: Any, method: str) -> None:
    user = new_user()
    task = await create(client, auth, user, priority="low", due_date="2026-01-01", tags=["a", "b"])
    url = f"/api/{user}/tasks/{task['id']}"
    changed = await client.request(method, url, json={"priority": "high", "tags": ["c"]}, headers=auth(user))
    assert changed.status_code == 200
    assert (changed.json()["priority"], changed.json()["tags"], changed.json()["due_date"]) == (
        "high",
        ["c"],
        "2026-01-01T00:00:00Z",
    )
    cleared = await client.request(method, url, json={"due_date": None, "tags": []}, headers=auth(user))
    assert (cleared.json()["due_date"], cleared.json()["tags"], cleared.json()["priority"]) == (None, [], "high")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"priority": "urgent"}, "priority"),
        ({"priority": 3}, "priority"),
        ({"priority": None}, "priority"),
        ({"due_date": "tomorrow"}, "due_date"),
        ({"due_date": "2026-12-24T18:00:00"}, "due_date"),  # no offset: ambiguous
        ({"due_date": "2026-02-30"}, "due_date"),
        ({"due_date": 1766534400}, "due_date"),
        ({"tags": "home"}, "tags"),
        ({"tags": ["ok", ""]}, "tags"),
        ({"tags": ["ok", "   "]}, "tags"),
        ({"tags": ["x" * 41]}, "tags"),
        ({"tags": [f"t{i}" for i in range(21)]}, "tags"),
        ({"tags": ["Home", "home"]}, "tags"),
        ({"tags": ["ok", 5]}, "tags"),
        ({"tags": ["nul\x00"]}, "tags"),
    ],
)
async def test_new_fields_are_validated(
    client: Client, auth: Auth, new_user: Any, body: dict[str, Any], field: str
) -> None:
    user = new_user()
    problem = assert_problem(
        await client.post(f"/api/{user}/tasks", json={"title": "x", **body}, headers=auth(user)), 400
    )
    assert field in [error["field"].split("[")[0] for error in problem["errors"]]  # tags[1] names the element
    task = await create(client, auth, user)
    response = await client.patch(f"/api/{user}/tasks/{task['id']}", json=body, headers=auth(user))
    assert_problem(response, 400)


# -- listing ----------------------------------------------------------------------------------------------


async def listed(client: Client, auth: Auth, user: str, query: str = "") -> list[dict[str, Any]]:
    response = await client.get(f"/api/{user}/tasks{query}", headers=auth(user))
    assert response.status_code == 200, response.text
    tasks: list[dict[str, Any]] = response.json()
    return tasks


def ids(tasks: list[dict[str, Any]]) -> list[int]:
    return [task["id"] for task in tasks]


@pytest.fixture
async def board(client: Client, auth: Auth, new_user: Any) -> tuple[str, list[dict[str, Any]]]:
    """One user's tasks with ties in every sort field and some tasks without a due date."""
    user = new_user()
    specs: list[dict[str, Any]] = [
        {"title": "Pay rent", "priority": "high", "due_date": "2026-12-01", "tags": ["Home", "money"]},
        {"title": "buy milk", "priority": "low", "tags": ["home", "errands"], "description": "2% fat_free"},
        {"title": "Pay rent", "priority": "medium", "due_date": "2026-12-01", "tags": ["money"]},
        {"title": "call mum", "priority": "high", "due_date": "2026-11-30T09:00:00Z", "completed": True},
        {"title": "Zebra", "priority": "medium", "tags": ["zoo"], "description": "Big STRIPES"},
        {"title": "apples", "priority": "low", "due_date": "2027-01-15", "tags": ["errands"], "completed": True},
        {"title": "Pay rent", "priority": "high", "due_date": "2026-12-01", "tags": ["HOME"]},
    ]
    return user, [await create(client, auth, user, **spec) for spec in specs]


def expected(tasks: list[dict[str, Any]], field: str, desc: bool) -> list[int]:
    """The documented order: by field, then id in the same direction; tasks without a due date last."""
    rank = {"low": 1, "medium": 2, "high": 3}

    def key(task: dict[str, Any]) -> Any:
        value = task[field]
        return rank[value] if field == "priority" else value

    present = [t for t in tasks if t[field] is not None]
    missing = [t for t in tasks if t[field] is None]
    ordered = sorted(present, key=lambda t: (key(t), t["id"]), reverse=desc)
    return ids(ordered) + sorted(ids(missing), reverse=desc)


@pytest.mark.parametrize(
    ("sort", "field"),
    [("created", "created_at"), ("updated", "updated_at"), ("due_date", "due_date"), ("priority", "priority")],
)
@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_sorts_with_a_stable_tie_break(
    client: Client, auth: Auth, board: tuple[str, list[dict[str, Any]]], sort: str, field: str, order: str
) -> None:
    user, tasks = board
    got = ids(await listed(client, auth, user, f"?sort={sort}&order={order}"))
    assert got == expected(tasks, field, order == "desc")


async def test_title_sort_is_stable_and_consistent(
    client: Client, auth: Auth, board: tuple[str, list[dict[str, Any]]]
) -> None:
    """Collations differ between databases; what must hold is: equal titles keep id order, desc reverses asc."""
    user, tasks = board
    ascending = await listed(client, auth, user, "?sort=title")
    descending = await listed(client, auth, user, "?sort=title&order=desc")
    assert ids(descending) == ids(ascending)[::-1]
    rents = [t["id"] for t in ascending if t["title"] == "Pay rent"]
    assert rents == sorted(rents)
    assert sorted(ids(ascending)) == sorted(ids(tasks))


async def test_default_orders(client: Client, auth: Auth, board: tuple[str, list[dict[str, Any]]]) -> None:
    user, tasks = board
    assert ids(await listed(client, auth, user)) == ids(tasks)[::-1]  # newest first
    assert ids(await listed(client, auth, user, "?sort=priority")) == expected(tasks, "priority", desc=True)
    assert ids(await listed(client, auth, user, "?sort=due_date")) == expected(tasks, "due_date", desc=False)


@pytest.mark.parametrize(
    ("query", "wanted"),
    [
        ("?status=pending", lambda t: not t["completed"]),
        ("?status=completed", lambda t: t["completed"]),
        ("?priority=high", lambda t: t["priority"] == "high"),
        ("?priority=high&priority=low", lambda t: t["priority"] in {"high", "low"}),
        ("?tag=home", lambda t: "home" in [x.casefold() for x in t["tags"]]),
        ("?tag=HOME&tag=Money", lambda t: {"home", "money"} <= {x.casefold() for x in t["tags"]}),
        ("?tag=nothing", lambda t: False),
        ("?due_before=2026-12-01", lambda t: t["due_date"] is not None and t["due_date"] < "2026-12-01"),
        ("?due_after=2026-12-01", lambda t: t["due_date"] is not None and t["due_date"] > "2026-12-01T00:00:00Z"),
        (
            "?due_after=2026-11-30T00:00:00Z&due_before=2026-12-02T00:00:00%2B00:00",
            lambda t: t["due_date"] is not None and "2026-11-30" <= t["due_date"] < "2026-12-02",
        ),
        ("?q=RENT", lambda t: "rent" in t["title"].casefold()),
        ("?q=stripes", lambda t: "stripes" in (t["description"] or "").casefold()),
        ("?q=2%25", lambda t: "2%" in (t["description"] or "")),  # % and _ are literal, not wildcards
        ("?q=t_f", lambda t: "t_f" in (t["description"] or "")),
        ("?q=fa__free", lambda t: False),  # with _ as a wildcard this would match "fat_free"
        ("?status=pending&priority=high&tag=home", lambda t: not t["completed"] and t["priority"] == "high"),
    ],
)
async def test_filters(
    client: Client,
    auth: Auth,
    board: tuple[str, list[dict[str, Any]]],
    query: str,
    wanted: Callable[[dict[str, Any]], bool],
) -> None:
    user, tasks = board
    response = await client.get(f"/api/{user}/tasks{query}", headers=auth(user))
    assert response.status_code == 200
    matching = [t["id"] for t in tasks if wanted(t)]
    assert sorted(ids(response.json())) == sorted(matching)
    assert response.headers["x-total-count"] == str(len(matching))


async def walk(client: Client, auth: Auth, user: str, query: str) -> tuple[list[int], list[str]]:
    """Follow ``Link: rel=next`` from the first page to the last; returns the ids and the totals seen."""
    url: str | None = f"/api/{user}/tasks{query}"
    seen: list[int] = []
    totals: list[str] = []
    pages = 0
    while url is not None:
        response = await client.get(url, headers=auth(user))
        assert response.status_code == 200, response.text
        seen += ids(response.json())
        totals.append(response.headers["x-total-count"])
        link = response.headers.get("link")
        url = link[1 : link.index(">")] if link else None
        pages += 1
        assert pages < 50
    return seen, totals


@pytest.mark.parametrize("sort", ["created", "updated", "title", "due_date", "priority"])
@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_pages_never_repeat_or_skip(
    client: Client, auth: Auth, board: tuple[str, list[dict[str, Any]]], sort: str, order: str, limit: int
) -> None:
    user, tasks = board
    everything = ids(await listed(client, auth, user, f"?sort={sort}&order={order}"))
    paged, totals = await walk(client, auth, user, f"?sort={sort}&order={order}&limit={limit}")
    assert paged == everything
    assert set(totals) == {str(len(tasks))}


async def test_pages_of_a_filtered_list(client: Client, auth: Auth, board: tuple[str, list[dict[str, Any]]]) -> None:
    user, _ = board
    everything = ids(await listed(client, auth, user, "?tag=home&sort=title"))
    paged, totals = await walk(client, auth, user, "?tag=home&sort=title&limit=1")
    assert paged == everything
    assert set(totals) == {str(len(everything))}


async def test_next_link_keeps_the_query_and_the_last_page_has_none(
    client: Client, auth: Auth, board: tuple[str, list[dict[str, Any]]]
) -> None:
    user, tasks = board
    response = await client.get(f"/api/{user}/tasks?tag=home&priority=high&priority=low&limit=1", headers=auth(user))
    link = response.headers["link"]
    assert link.endswith('>; rel="next"')
    target = urlsplit(link[1 : link.index(">")])
    assert target.path == f"/api/{user}/tasks"
    params = parse_qsl(target.query)
    assert [(k, v) for k, v in params if k != "cursor"] == [
        ("tag", "home"),
        ("priority", "high"),
        ("priority", "low"),
        ("limit", "1"),
    ]
    last = await client.get(f"/api/{user}/tasks?limit={len(tasks)}", headers=auth(user))
    assert "link" not in last.headers


async def test_default_page_is_100(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    for n in range(101):
        await create(client, auth, user, title=f"task {n}")
    response = await client.get(f"/api/{user}/tasks", headers=auth(user))
    assert len(response.json()) == 100
    assert response.headers["x-total-count"] == "101"
    assert "link" in response.headers


async def first_cursor(client: Client, auth: Auth, user: str, query: str) -> str:
    response = await client.get(f"/api/{user}/tasks{query}", headers=auth(user))
    link = response.headers["link"]
    return dict(parse_qsl(urlsplit(link[1 : link.index(">")]).query))["cursor"]


async def test_a_cursor_only_works_for_its_own_list(
    client: Client, auth: Auth, board: tuple[str, list[dict[str, Any]]], new_user: Any
) -> None:
    user, _ = board
    cursor = await first_cursor(client, auth, user, "?limit=1&sort=title")
    ok = await client.get(f"/api/{user}/tasks?limit=1&sort=title&cursor={cursor}", headers=auth(user))
    assert ok.status_code == 200
    assert ok.json()  # the page size may change; the cursor still fits
    assert (await client.get(f"/api/{user}/tasks?limit=5&sort=title&cursor={cursor}", headers=auth(user))).is_success

    for other_list in ("?sort=created", "?sort=title&order=desc", "?sort=title&status=pending", "?sort=title&q=a"):
        response = await client.get(f"/api/{user}/tasks{other_list}&cursor={cursor}", headers=auth(user))
        assert assert_problem(response, 400)["errors"][0]["field"] == "cursor"

    intruder = new_user()
    await create(client, auth, intruder)
    response = await client.get(f"/api/{intruder}/tasks?limit=1&sort=title&cursor={cursor}", headers=auth(intruder))
    assert assert_problem(response, 400)["errors"][0]["field"] == "cursor"


async def test_forged_cursors_are_refused(client: Client, auth: Auth, board: tuple[str, list[dict[str, Any]]]) -> None:
    user, _ = board
    cursor = await first_cursor(client, auth, user, "?limit=1")
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    tampered = base64.urlsafe_b64encode(raw[:-2] + b"9]").decode().rstrip("=")  # another id, same signature
    for bad in (tampered, cursor[:-3], "x", "%00", "A" * 1025, "====", "eyJ9"):
        response = await client.get(f"/api/{user}/tasks?limit=1&cursor={bad}", headers=auth(user))
        assert_problem(response, 400)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?limit=ten", "limit"),
        ("?sort=owner", "sort"),
        ("?sort=user_id", "sort"),
        ("?order=sideways", "order"),
        ("?status=done", "status"),
        ("?priority=urgent", "priority"),
        ("?due_before=soon", "due_before"),
        ("?due_after=2026-13-01", "due_after"),
        ("?due_after=2026-12-01T10:00:00", "due_after"),
        ("?tag=", "tag"),
        ("?tag=" + "x" * 41, "tag"),
        ("?q=", "q"),
        ("?q=" + "x" * 201, "q"),
        ("?" + "&".join(f"tag=t{i}" for i in range(21)), "tag"),
    ],
)
async def test_bad_list_queries_are_400(client: Client, auth: Auth, new_user: Any, query: str, field: str) -> None:
    user = new_user()
    problem = assert_problem(await client.get(f"/api/{user}/tasks{query}", headers=auth(user)), 400)
    assert field in [error["field"] for error in problem["errors"]]


async def test_listing_never_shows_another_users_tasks(client: Client, auth: Auth, new_user: Any) -> None:
    users = [new_user() for _ in range(3)]
    for user, n in itertools.product(users, range(3)):
        await create(client, auth, user, title=f"shared title {n}", tags=["shared"], priority="high")
    for user in users:
        for query in ("", "?tag=shared", "?q=shared", "?priority=high", "?sort=title&limit=1"):
            seen, totals = await walk(client, auth, user, query)
            assert len(seen) == 3
            assert set(totals) == {"3"}
            for task in await listed(client, auth, user, query):
                assert task["user_id"] == user


# -- found by an adversarial review ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-14:00"])
async def test_dates_at_the_edge_of_the_calendar_are_400(client: Client, auth: Auth, new_user: Any, value: str) -> None:
    user = new_user()
    body = {"title": "x", "due_date": value}
    assert_problem(await client.post(f"/api/{user}/tasks", json=body, headers=auth(user)), 400)
    for field in ("due_before", "due_after"):
        response = await client.get(f"/api/{user}/tasks", params={field: value}, headers=auth(user))
        assert assert_problem(response, 400)["errors"][0]["field"] == field


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("2026-12-24t18:00:00z", "2026-12-24T18:00:00Z"),  # RFC 3339 allows lower case
        ("2026-12-24T18:00:00.5+01:00", "2026-12-24T17:00:00.500000Z"),
        ("0001-01-01", "0001-01-01T00:00:00Z"),
        ("2026-12-24T18:00:00.123456789Z", "2026-12-24T18:00:00.123456Z"),  # any fraction; microseconds kept
    ],
)
async def test_rfc3339_forms_are_accepted(client: Client, auth: Auth, new_user: Any, value: str, stored: str) -> None:
    assert (await create(client, auth, new_user(), due_date=value))["due_date"] == stored


@pytest.mark.parametrize(
    "value",
    [
        "2026-W52-1T18:00:00Z",
        "20261224T180000Z",
        "2026-12-24T18+01:00",
        "2026-12-24 18:00:00Z",
        "2026-12-24T18:00:00,5Z",
        " 2026-12-24",  # the schema's formats allow no surrounding white space
        "\uff12026-12-24",  # a full-width digit
        "2026-12-31T23:59:60Z",  # a leap second: RFC 3339 has them, Python's datetime does not
        "0001-01-01T12:00:00Z",  # date-times on the calendar's first and last day: an offset could leave it
        "9999-12-31T00:00:00-00:00",
    ],
)
async def test_non_rfc3339_forms_are_refused(client: Client, auth: Auth, new_user: Any, value: str) -> None:
    user = new_user()
    response = await client.post(f"/api/{user}/tasks", json={"title": "x", "due_date": value}, headers=auth(user))
    assert_problem(response, 400)


async def test_cursors_survive_long_non_ascii_titles(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    for title in ("é" * 200, "ê" * 200, "😀" * 200, "plain"):
        await create(client, auth, user, title=title)
    for order in ("asc", "desc"):
        seen, _ = await walk(client, auth, user, f"?sort=title&order={order}&limit=1")
        assert len(seen) == 4
        assert len(set(seen)) == 4


@pytest.mark.parametrize("user", ["用户-{}", "a?b-{}", "a>b <c>-{}", "é-{}"])
async def test_next_links_encode_the_user_id(client: Client, auth: Auth, user: str) -> None:
    user = user.format(uuid.uuid4().hex[:8])
    path = f"/api/{quote(user, safe='')}/tasks"
    for n in range(3):
        response = await client.post(path, json={"title": f"t{n}"}, headers=auth(user))
        assert response.status_code == 201
    response = await client.get(f"{path}?limit=1", headers=auth(user))
    link = response.headers["link"]
    assert link.isascii()
    target = link[1 : link.index(">")]
    assert target.startswith(f"{path}?")
    seen = []
    while True:
        page = await client.get(target, headers=auth(user))
        assert page.status_code == 200, page.text
        seen += ids(page.json())
        next_link = page.headers.get("link")
        if not next_link:
            break
        target = next_link[1 : next_link.index(">")]
    assert len(seen) == 2


async def test_search_ignores_case_across_unicode_on_both_databases(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    task = await create(client, auth, user, title="Élan café", description="ÜBER Straße")
    for q in ("élan", "CAFÉ", "über", "STRAßE", "straße"):
        assert ids(await listed(client, auth, user, f"?q={quote(q)}")) == [task["id"]], q


async def test_nul_in_search_is_400(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    problem = assert_problem(await client.get(f"/api/{user}/tasks?q=%00", headers=auth(user)), 400)
    assert problem["errors"][0]["field"] == "q"
