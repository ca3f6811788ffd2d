"""Offline-first clients: the trash, the change feed and its cursors, 412 with the current task.

A client is modelled as a dict of task id → task that applies each feed page; after every scenario it must
equal a full listing of the user's tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.tasks.sync import SyncPosition

Client = AsyncTestClient[Litestar]
Auth = Callable[..., dict[str, str]]


async def _create(client: Client, auth: Auth, user: str, title: str) -> dict[str, Any]:
    response = await client.post(f"/api/{user}/tasks", json={"title": title}, headers=auth(user))
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


async def _listing(client: Client, auth: Auth, user: str) -> dict[int, dict[str, Any]]:
    response = await client.get(f"/api/{user}/tasks", params={"limit": 200}, headers=auth(user))
    assert response.status_code == 200
    return {task["id"]: task for task in response.json()}


class Device:
    """A client that keeps the user's tasks locally and follows the feed."""

    def __init__(self, client: Client, auth: Auth, user: str, page: int = 2) -> None:
        self.client, self.auth, self.user, self.page = client, auth, user, page
        self.tasks: dict[int, dict[str, Any]] = {}
        self.cursor: str | None = None
        self.pages = 0

    async def sync(self) -> None:
        while True:
            params: dict[str, Any] = {"limit": self.page}
            if self.cursor is not None:
                params["cursor"] = self.cursor
            response = await self.client.get(f"/api/{self.user}/changes", params=params, headers=self.auth(self.user))
            assert response.status_code == 200, response.text
            body = response.json()
            assert set(body) == {"tasks", "deleted", "cursor", "has_more"}
            ids = [t["id"] for t in body["tasks"]] + [d["id"] for d in body["deleted"]]
            assert len(ids) == len(set(ids)), "a task appears at most once per page"
            for task in body["tasks"]:
                self.tasks[task["id"]] = task
            for gone in body["deleted"]:
                self.tasks.pop(gone["id"], None)
            self.cursor = body["cursor"]
            self.pages += 1
            if not body["has_more"]:
                return


async def test_delete_moves_a_task_to_the_trash_and_restore_brings_it_back(
    client: Client, auth: Auth, new_user: Any
) -> None:
    user = new_user()
    task = await _create(client, auth, user, "keep me")
    url = f"/api/{user}/tasks/{task['id']}"
    assert (await client.delete(url, headers=auth(user))).status_code == 204

    for method in ("get", "put", "patch", "delete"):
        kwargs: dict[str, Any] = {"json": {"title": "x"}} if method in {"put", "patch"} else {}
        response = await client.request(method.upper(), url, headers=auth(user), **kwargs)
        assert response.status_code == 404, method
    assert (await client.patch(url + "/complete", headers=auth(user))).status_code == 404
    assert task["id"] not in await _listing(client, auth, user)

    trash = await client.get(f"/api/{user}/trash", headers=auth(user))
    assert trash.status_code == 200
    assert trash.headers["x-total-count"] == "1"
    [trashed] = trash.json()
    assert trashed["id"] == task["id"]
    assert trashed["title"] == "keep me"
    assert datetime.fromisoformat(trashed["deleted_at"]) <= datetime.now(UTC)

    restored = await client.post(f"/api/{user}/trash/{task['id']}/restore", headers=auth(user))
    assert restored.status_code == 200
    assert restored.json()["id"] == task["id"]
    assert restored.headers["etag"] not in {None, ""}
    again = await client.get(url, headers=auth(user))
    assert again.status_code == 200
    assert again.headers["etag"] == restored.headers["etag"]
    assert (await client.get(f"/api/{user}/trash", headers=auth(user))).json() == []
    # Restoring what is not in the trash is a 404.
    assert (await client.post(f"/api/{user}/trash/{task['id']}/restore", headers=auth(user))).status_code == 404


async def test_purge_removes_a_task_for_good(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    task = await _create(client, auth, user, "gone")
    # Only what is in the trash can be purged.
    assert (await client.delete(f"/api/{user}/trash/{task['id']}", headers=auth(user))).status_code == 404
    await client.delete(f"/api/{user}/tasks/{task['id']}", headers=auth(user))
    assert (await client.delete(f"/api/{user}/trash/{task['id']}", headers=auth(user))).status_code == 204
    assert (await client.get(f"/api/{user}/trash", headers=auth(user))).json() == []
    assert (await client.post(f"/api/{user}/trash/{task['id']}/restore", headers=auth(user))).status_code == 404


async def test_the_trash_is_paged_newest_deletion_first(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    ids = [(await _create(client, auth, user, f"t{i}"))["id"] for i in range(5)]
    for task_id in ids:  # deleted in creation order: the last one is the newest deletion
        await client.delete(f"/api/{user}/tasks/{task_id}", headers=auth(user))
    seen: list[int] = []
    url: str | None = f"/api/{user}/trash?limit=2"
    while url is not None:
        response = await client.get(url, headers=auth(user))
        assert response.status_code == 200
        assert response.headers["x-total-count"] == "5"
        seen += [t["id"] for t in response.json()]
        link = response.headers.get("link")
        url = link[1 : link.index(">")] if link else None
    assert seen == list(reversed(ids))


async def test_another_users_trash_is_out_of_reach(client: Client, auth: Auth, new_user: Any) -> None:
    owner, other = new_user(), new_user()
    task = await _create(client, auth, owner, "mine")
    await client.delete(f"/api/{owner}/tasks/{task['id']}", headers=auth(owner))
    assert (await client.get(f"/api/{other}/trash", headers=auth(other))).json() == []
    restore = await client.post(f"/api/{other}/trash/{task['id']}/restore", headers=auth(other))
    assert restore.status_code == 404
    assert (await client.delete(f"/api/{other}/trash/{task['id']}", headers=auth(other))).status_code == 404
    assert (await client.get(f"/api/{owner}/trash", headers=auth(owner))).json()[0]["id"] == task["id"]


async def test_a_stale_write_answers_412_with_the_current_task(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    task = await _create(client, auth, user, "v1")
    url = f"/api/{user}/tasks/{task['id']}"
    first = await client.get(url, headers=auth(user))
    changed = await client.patch(url, json={"title": "v2"}, headers=auth(user))
    stale = await client.patch(url, json={"title": "v3"}, headers={**auth(user), "If-Match": first.headers["etag"]})
    assert stale.status_code == 412
    assert stale.headers["content-type"].startswith("application/problem+json")
    assert stale.headers["etag"] == changed.headers["etag"]
    assert stale.json()["task"] == changed.json()
    stale_delete = await client.delete(url, headers={**auth(user), "If-Match": first.headers["etag"]})
    assert stale_delete.status_code == 412
    assert stale_delete.json()["task"]["title"] == "v2"


async def test_two_devices_stay_equal_to_the_server(client: Client, auth: Auth, new_user: Any, app: Litestar) -> None:
    user = new_user()
    phone, laptop = Device(client, auth, user), Device(client, auth, user, page=3)
    tasks = [await _create(client, auth, user, f"task {i}") for i in range(5)]
    await phone.sync()
    assert phone.tasks == await _listing(client, auth, user)
    assert phone.pages == 3  # 5 tasks, 2 a page

    # Writes of every kind while the laptop was offline.
    await client.patch(f"/api/{user}/tasks/{tasks[0]['id']}", json={"title": "renamed"}, headers=auth(user))
    await client.patch(f"/api/{user}/tasks/{tasks[1]['id']}/complete", headers=auth(user))
    await client.delete(f"/api/{user}/tasks/{tasks[2]['id']}", headers=auth(user))
    await client.delete(f"/api/{user}/tasks/{tasks[3]['id']}", headers=auth(user))
    await client.post(f"/api/{user}/trash/{tasks[3]['id']}/restore", headers=auth(user))
    await client.delete(f"/api/{user}/tasks/{tasks[4]['id']}", headers=auth(user))
    await client.delete(f"/api/{user}/trash/{tasks[4]['id']}", headers=auth(user))
    await _create(client, auth, user, "new")

    await phone.sync()
    await laptop.sync()
    server = await _listing(client, auth, user)
    assert phone.tasks == server
    assert laptop.tasks == server
    assert server[tasks[0]["id"]]["title"] == "renamed"

    # A batch from the laptop, then the phone comes back with a cursor that has expired: 410, and it syncs
    # again from the start, as the docs say, dropping what it held.
    batch = {
        "atomic": True,
        "operations": [
            {"op": "create", "ref": "b", "data": {"title": "from a batch"}},
            {"op": "complete", "ref": "b"},
            {"op": "delete", "id": tasks[0]["id"]},
        ],
    }
    assert (await client.post(f"/api/{user}/batch", json=batch, headers=auth(user))).status_code == 200
    await laptop.sync()
    phone.cursor = SyncPosition(after=0, since=None, started=datetime.now(UTC) - timedelta(days=31)).seal(
        user, app.state.cursor_key
    )
    expired = await client.get(f"/api/{user}/changes", params={"cursor": phone.cursor}, headers=auth(user))
    assert expired.status_code == 410
    phone.tasks, phone.cursor = {}, None
    await phone.sync()
    server = await _listing(client, auth, user)
    assert phone.tasks == server
    assert laptop.tasks == server

    # Nothing changed: an empty page, has_more false.
    response = await client.get(f"/api/{user}/changes", params={"cursor": phone.cursor}, headers=auth(user))
    assert response.json()["tasks"] == []
    assert response.json()["deleted"] == []
    assert response.json()["has_more"] is False


async def test_a_deletion_during_an_initial_sync_is_reported(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    tasks = [await _create(client, auth, user, f"task {i}") for i in range(4)]
    device = Device(client, auth, user, page=2)
    first = await client.get(f"/api/{user}/changes", params={"limit": 2}, headers=auth(user))
    body = first.json()
    assert body["has_more"] is True
    device.tasks = {t["id"]: t for t in body["tasks"]}
    device.cursor = body["cursor"]
    # A task the device already holds is deleted, and one it has not reached yet changes.
    await client.delete(f"/api/{user}/tasks/{body['tasks'][0]['id']}", headers=auth(user))
    await client.patch(f"/api/{user}/tasks/{tasks[3]['id']}", json={"title": "late"}, headers=auth(user))
    await device.sync()
    assert device.tasks == await _listing(client, auth, user)


async def test_the_initial_sync_leaves_out_old_deletions(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    task = await _create(client, auth, user, "deleted before the device existed")
    await client.delete(f"/api/{user}/tasks/{task['id']}", headers=auth(user))
    response = await client.get(f"/api/{user}/changes", headers=auth(user))
    assert response.json()["tasks"] == []
    assert response.json()["deleted"] == []
    assert response.json()["has_more"] is False


async def test_a_deleted_task_is_reported_with_its_time(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    task = await _create(client, auth, user, "soon gone")
    cursor = (await client.get(f"/api/{user}/changes", headers=auth(user))).json()["cursor"]
    await client.delete(f"/api/{user}/tasks/{task['id']}", headers=auth(user))
    [trashed] = (await client.get(f"/api/{user}/trash", headers=auth(user))).json()
    body = (await client.get(f"/api/{user}/changes", params={"cursor": cursor}, headers=auth(user))).json()
    assert body["tasks"] == []
    assert body["deleted"] == [{"id": task["id"], "deleted_at": trashed["deleted_at"]}]


@pytest.mark.parametrize("days_old", [30, 45])
async def test_an_expired_cursor_is_410(
    client: Client, auth: Auth, new_user: Any, app: Litestar, days_old: int
) -> None:
    user = new_user()
    old = SyncPosition(after=0, since=None, started=datetime.now(UTC) - timedelta(days=days_old))
    cursor = old.seal(user, app.state.cursor_key)
    response = await client.get(f"/api/{user}/changes", params={"cursor": cursor}, headers=auth(user))
    assert response.status_code == 410
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith(":cursor-expired")


async def test_a_cursor_within_retention_is_accepted(client: Client, auth: Auth, new_user: Any, app: Litestar) -> None:
    user = new_user()
    recent = SyncPosition(after=0, since=None, started=datetime.now(UTC) - timedelta(days=28))
    response = await client.get(
        f"/api/{user}/changes", params={"cursor": recent.seal(user, app.state.cursor_key)}, headers=auth(user)
    )
    assert response.status_code == 200


async def test_forged_foreign_and_malformed_cursors_are_400(
    client: Client, auth: Auth, new_user: Any, app: Litestar
) -> None:
    user, other = new_user(), new_user()
    await _create(client, auth, other, "theirs")
    theirs = (await client.get(f"/api/{other}/changes", headers=auth(other))).json()["cursor"]
    forged = SyncPosition(after=0, since=None, started=datetime.now(UTC)).seal(user, b"not the server's key")
    list_cursor_like = "A" * 40
    for cursor in (theirs, forged, list_cursor_like, "%%%", ""):
        response = await client.get(f"/api/{user}/changes", params={"cursor": cursor}, headers=auth(user))
        assert response.status_code == 400, cursor
        assert response.json()["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize("limit", ["0", "501", "x"])
async def test_feed_limit_is_bounded(client: Client, auth: Auth, new_user: Any, limit: str) -> None:
    user = new_user()
    response = await client.get(f"/api/{user}/changes", params={"limit": limit}, headers=auth(user))
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "limit"


async def test_feed_and_trash_need_the_users_own_token(client: Client, auth: Auth, new_user: Any) -> None:
    user, other = new_user(), new_user()
    for path in ("changes", "trash"):
        assert (await client.get(f"/api/{user}/{path}")).status_code == 401
        assert (await client.get(f"/api/{user}/{path}", headers=auth(other))).status_code == 403
