# The NixOS configuration of agent @NAME@, imported into its container by the hive's meta flake.
# The manager edits this file (and may add others next to it) in agents/@NAME@/config and asks
# for approval with request_apply_commit; only approved commits reach the container.
{ config, lib, pkgs, ... }:
{
  # Packages the agent can use in its container, e.g. [ pkgs.jq pkgs.ripgrep ].
  environment.systemPackages = [ ];
}
