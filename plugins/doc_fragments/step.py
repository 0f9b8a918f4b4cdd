# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module of the collection shares: where it runs and what it needs, documented once."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
attributes:
  action:
    support: full
  async:
    support: full
  bypass_host_loop:
    support: none
  check_mode:
    support: full
  platform:
    platforms: posix
notes:
  - Needs the C(kubernetes) Python library where the task runs, usually the controller.
  - Where the task runs on the controller (C(delegate_to) localhost, as the collection's roles and playbooks run it),
    the module runs inside the controller's Ansible worker through its action plugin, with no Python process of its
    own; elsewhere (another host, C(become), C(async)) it runs as a module process. The results are the same.
"""
