"""The files in polkit/ agree with the interface and with each other."""

import configparser
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from appjail import interface as api

POLKIT = Path(__file__).resolve().parents[2] / "polkit"
INSTALLED_HELPER = "/usr/sbin/appjail-helper"


def test_policy_declares_exactly_the_actions_with_the_designed_defaults():
    root = ET.parse(POLKIT / "org.appjail.policy").getroot()
    defaults = {action.get("id"): {d.tag: d.text for d in action.find("defaults")}
                for action in root.iter("action")}
    assert set(defaults) == set(api.ACTIONS) == set(api.METHOD_ACTIONS.values()) | {api.ACTION_MANAGE}
    assert defaults[api.ACTION_RUN] == {"allow_any": "no", "allow_inactive": "no",
                                        "allow_active": "auth_admin_keep"}
    assert set(defaults[api.ACTION_INSPECT].values()) == {"yes"}
    assert set(defaults[api.ACTION_MANAGE].values()) == {"auth_admin"}


def test_rules_grant_only_run_and_only_to_the_group():
    rules = (POLKIT / "50-appjail.rules").read_text()
    assert re.findall(r'action\.id == "([^"]+)"', rules) == [api.ACTION_RUN]
    assert 'subject.isInGroup("appjail")' in rules
    assert rules.count("polkit.Result.YES") == 1


def test_bus_policy_lets_only_root_own_the_name_and_anyone_call_the_interface():
    root = ET.parse(POLKIT / "org.appjail.Helper1.conf").getroot()
    owners = [(policy.attrib, rule.tag) for policy in root.iter("policy")
              for rule in policy if rule.get("own") == api.BUS_NAME]
    assert owners == [({"user": "root"}, "allow"), ({"context": "default"}, "deny")]
    calls = [rule.attrib for policy in root.iter("policy") if policy.get("context") == "default"
             for rule in policy if rule.tag == "allow"]
    assert {"send_destination": api.BUS_NAME, "send_interface": api.INTERFACE} in calls
    assert all(rule.get("send_destination") == api.BUS_NAME for rule in calls)


def _ini(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(POLKIT / name)
    return parser


def test_activation_file_and_systemd_unit_start_the_installed_helper_as_root():
    service = _ini("org.appjail.Helper1.service")["D-BUS Service"]
    assert service["Name"] == api.BUS_NAME and service["User"] == "root"
    assert service["Exec"].split()[0] == INSTALLED_HELPER
    unit = _ini(service["SystemdService"])
    assert unit["Service"]["BusName"] == api.BUS_NAME and unit["Service"]["Type"] == "dbus"
    assert unit["Service"]["ExecStart"] == service["Exec"]
    assert unit["Service"]["KillMode"] == "process"  # jails outlive a helper restart
