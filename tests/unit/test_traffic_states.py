"""Connection states as inspect shows them, named here: pyroute2 0.7 (Debian 12 and 13) names none."""

from appjail.helper.firewall import traffic
class Message(dict):
    """A conntrack message as pyroute2 gives it: attributes by name, nested."""

    def get_attr(self, name):
        return self.get(name)


def tcp(state: int) -> Message:
    return Message(CTA_PROTOINFO=Message(CTA_PROTOINFO_TCP=Message(CTA_PROTOINFO_TCP_STATE=state)))


def test_tcp_states_are_the_kernels_names():
    assert traffic._state(tcp(3)) == "ESTABLISHED"
    assert traffic._state(tcp(7)) == "TIME_WAIT"
    assert traffic._state(tcp(0)) == "UNKNOWN"


def test_other_protocols_say_how_far_the_exchange_got():
    assert traffic._state(Message(CTA_STATUS=traffic._IPS_SEEN_REPLY | traffic._IPS_ASSURED)) == "ASSURED"
    assert traffic._state(Message(CTA_STATUS=traffic._IPS_SEEN_REPLY)) == "REPLIED"
    assert traffic._state(Message()) == "UNREPLIED"
