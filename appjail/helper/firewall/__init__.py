"""Netfilter: the jails' rules, the two backends, coexistence with other firewalls, counters."""
