"""Packaging for `vpd`; every field is read from `settings.ini`, the nbdev 2 project file."""
import shlex
from configparser import ConfigParser

import setuptools

ini = ConfigParser(delimiters=["="])
ini.read("settings.ini", encoding="utf-8")
cfg = ini["DEFAULT"]

setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    author=cfg["author"],
    author_email=cfg["author_email"],
    url=cfg["git_url"],
    license="Apache Software License 2.0",
    keywords=cfg["keywords"],
    classifiers=[
        "Intended Audience :: Science/Research",
        "License :: OSI Approved :: Apache Software License",
        "Natural Language :: English",
        "Programming Language :: Python :: 3.11",
    ],
    python_requires=">=" + cfg["min_python"],
    packages=setuptools.find_packages(include=["vpd", "vpd.*"]),
    include_package_data=True,
    zip_safe=False,
    install_requires=shlex.split(cfg["requirements"]),
    extras_require={"dev": shlex.split(cfg["dev_requirements"])},
    entry_points={
        "console_scripts": cfg["console_scripts"].split(),
        "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
    },
)
