"""Signing in and out, as an operator does it in a browser."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import shoot, sign_in
from tests.operators.dashboard_client import OPERATOR, PASSWORD


def test_a_wrong_password_then_the_right_one_then_sign_out(page: Page) -> None:
    page.goto("/dashboard/")
    expect(page).to_have_url("/dashboard/login?next=/dashboard/")
    expect(page.get_by_role("heading", name="Se connecter")).to_be_visible()
    shoot(page, "login")

    sign_in(page, password="pas le bon mot de passe")
    expect(page.get_by_role("alert")).to_contain_text(
        "Nom d'utilisateur ou mot de passe incorrect.")
    expect(page).to_have_title("Se connecter · Dannaya")
    shoot(page, "login-wrong-password")

    sign_in(page)
    expect(page.get_by_role("heading", name="Tableau de bord")).to_be_visible()
    expect(page.get_by_role("rowheader", name="Mopti")).to_be_visible()
    shoot(page, "home")

    page.get_by_role("button", name="Se déconnecter").click()
    expect(page.get_by_role("status")).to_have_text("Vous êtes déconnecté.")
    page.goto("/dashboard/broadcasts")
    expect(page.get_by_role("heading", name="Se connecter")).to_be_visible()


def test_too_many_failures_say_when_to_try_again(page: Page) -> None:
    for _ in range(5):
        sign_in(page, password="devinette")
    sign_in(page)
    expect(page.get_by_role("alert")).to_contain_text("Réessayez dans 15 minutes.")
    shoot(page, "login-throttled")


def test_the_bambara_toggle(page: Page) -> None:
    sign_in(page)
    page.get_by_role("link", name="Bamanankan").click()
    expect(page.locator("html")).to_have_attribute("lang", "bm")
    expect(page.get_by_role("link", name="Cikanw")).to_be_visible()
    page.get_by_role("link", name="Cikanw").click()
    expect(page.get_by_role("heading", name="Cikanw")).to_be_visible()  # the cookie kept it
    page.get_by_role("link", name="Français").click()
    expect(page.get_by_role("heading", name="Diffusions")).to_be_visible()


def test_two_tabs_on_the_sign_in_page_both_sign_in(page: Page) -> None:
    """The second tab's sign-in page (or the redirect a signed-out page's live stream gets
    in the background) must not spoil the first tab's form."""
    page.goto("/dashboard/login")
    other = page.context.new_page()
    other.goto("/dashboard/login")
    page.get_by_label("Nom d'utilisateur").fill(OPERATOR.name)
    page.get_by_label("Mot de passe").fill(PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    expect(page.get_by_role("heading", name="Tableau de bord")).to_be_visible()
    other.reload()  # now signed in: the sign-in page sends it on
    expect(other).to_have_url("/dashboard/")
