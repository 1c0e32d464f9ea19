"""Maps the fixed top-level folders onto one import package, ``slimline``.

``core/`` becomes ``slimline.core`` and so on. The package list is computed so
that a new subpackage can never be silently left out of the wheel.
"""
from setuptools import find_packages, setup

ROOTS = ("core", "gui", "plugins", "resources")

packages: list[str] = []
package_dir: dict[str, str] = {}
for root in ROOTS:
    package_dir[f"slimline.{root}"] = root
    packages.append(f"slimline.{root}")
    packages += [f"slimline.{root}.{sub}" for sub in find_packages(root)]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"slimline.resources": ["demo/*", "icons/*", "themes/*"]},
)
